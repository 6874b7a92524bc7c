// RunDrill's course: choose the VM and the hosts, start the load, inject the fault, watch for
// the expected outcome (failover, re-protection, or nothing), heal, and score.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <utility>

#include "drill_faults.h"
#include "drill_watch.h"
#include "ferry/base/clock.h"
#include "ferry/ha/drill.h"
#include "ferry/ha/subprocess.h"

namespace ferry::ha {

using nlohmann::json;

Result<json> RunDrill(const ClusterConfig& c, const DrillOptions& o) {
  const Fault fault = o.fault;
  const bool vm_target = TargetsVm(fault);
  if (vm_target ? !c.Vm(o.target) : !c.Host(o.target)) {
    return InvalidArgument(std::string("no ") + (vm_target ? "VM" : "host") + " named \"" + o.target + "\" in the config");
  }
  Outcome expected = Expected(fault, c.lease_ms, o.stop_s);
  if (fault == Fault::kStopVm) {
    FERRY_ASSIGN_OR_RETURN(expected, StopVmOutcome(c, o.stop_s));
  }
  if (fault == Fault::kStopAgent) {
    FERRY_ASSIGN_OR_RETURN(expected, StopAgentOutcome(c, o.stop_s));
  }
  auto before = AnyAgent(c, vm_target ? "" : o.target);
  if (!before.ok()) return before.status();

  // The VM under test: the one named, or the first with a service owned by the faulted host.
  std::string vm = vm_target ? o.target : o.vm;
  if (vm.empty()) {
    for (const auto& v : (*before)["cluster"]["vms"]) {
      const VmSpec* s = c.Vm(v.value("name", ""));
      if (v.value("owner", "") == o.target && s && !s->service.empty()) vm = s->name;
    }
  }
  const VmSpec* spec = c.Vm(vm);
  if (!spec) return InvalidArgument(vm.empty() ? "no VM with a service runs on " + o.target : "no VM named " + vm + " in the config");
  if (spec->service.empty() || c.client_netns.empty()) {
    return InvalidArgument("a drill measures RTO with a load client: vm " + vm + " needs \"service\" and the config \"client_netns\"");
  }
  const json entry = VmEntry(*before, vm);
  const std::string owner = entry.value("owner", ""), standby = entry.value("standby_host", "");
  const uint64_t old_gen = entry.value("generation", uint64_t{0});
  if (entry.value("replication", "") != "protected") {
    return Status(ErrorCode::kRefused, "vm " + vm + " is not protected right now (replication: " + entry.value("replication", "none") +
                                           "): the drill would lose it; wait until `ferry ha status` shows it protected");
  }
  // The host the fault acts on.
  std::string at = o.target;
  if (fault == Fault::kKillVm || fault == Fault::kCutReplication || fault == Fault::kStopVm) at = owner;
  if (fault == Fault::kKillStandby) at = standby;
  const HostConfig* host = c.Host(at);
  if (!host) return Status(ErrorCode::kRefused, "vm " + vm + " has no " + (fault == Fault::kKillStandby ? "standby" : "owner") + " now");
  if (!vm_target && owner != o.target) return InvalidArgument("vm " + vm + " runs on " + owner + ", not on " + o.target);
  if (fault == Fault::kRestartCorosync && host->corosync_start.empty()) {
    return InvalidArgument("restart-corosync: host " + at + " has no \"corosync_start\" command in the config to start it again with");
  }
  std::string move_to = o.move_to;
  if (fault == Fault::kKillHostMidMove && move_to.empty()) {
    for (const auto& h : c.hosts) {
      if (h.name != owner && h.name != standby) move_to = h.name;
    }
    if (move_to.empty()) return InvalidArgument("kill-host-mid-move needs a third host to move " + vm + " to");
  }

  LoadClient client;
  FERRY_RETURN_IF_ERROR(client.Start(c, *spec, o, host->dir + "/drill-client.json"));
  PrimarySampler sampler(c.Host(owner)->dir + "/" + vm + ".sock");
  SleepS(1.5);  // load running, checkpoints flowing

  // Inject.
  std::function<void()> heal = [] {};
  json extra = json::object();
  uint64_t t_fault = RealtimeMs();
  Status injected = Status::Ok();
  switch (fault) {
    case Fault::kKillHost: injected = KillHost(*host); break;
    case Fault::kPartitionHost:
      injected = LinkDown(*host);
      heal = [host] { (void)LinkUp(*host); };
      break;
    case Fault::kKillVm: {
      auto pid = VmmPid(*host, vm);
      injected = pid.ok() ? Signal(*pid, SIGKILL) : pid.status();
      break;
    }
    case Fault::kStopVm: {
      auto pid = VmmPid(*host, vm);
      // Held by a pidfd: once its agent killed it as hung, the pid may name another process.
      auto fd = pid.ok() ? OpenPidfd(*pid) : Result<UniqueFd>(pid.status());
      if (!fd.ok()) {
        injected = fd.status();
        break;
      }
      auto held = std::make_shared<UniqueFd>(std::move(*fd));
      injected = SignalPidfd(held->get(), SIGSTOP);
      heal = [held] { (void)SignalPidfd(held->get(), SIGCONT); };  // fails harmlessly once its agent killed it
      break;
    }
    case Fault::kKillStandby: {
      auto pid = VmmPid(*host, vm);
      injected = pid.ok() ? Signal(*pid, SIGKILL) : pid.status();
      break;
    }
    case Fault::kKillAgent: {
      auto pid = AgentPid(*host);
      injected = pid.ok() ? Signal(*pid, SIGKILL) : pid.status();
      break;
    }
    case Fault::kStopAgent: {
      auto pid = AgentPid(*host);
      injected = pid.ok() ? Signal(*pid, SIGSTOP) : pid.status();
      if (pid.ok()) heal = [p = *pid] { (void)Signal(p, SIGCONT); };
      break;
    }
    case Fault::kCutReplication: {
      // Only the path to this VM's standby: the owner can re-protect it on a third host.
      const HostConfig* sb = c.Host(standby);
      const std::string to = sb ? sb->address : "";
      injected = CutPort(*host, "tcp", spec->port, to);
      heal = [host, port = spec->port, to] { (void)HealPort(*host, "tcp", port, to); };
      break;
    }
    case Fault::kCutCorosync:
      injected = CutPort(*host, "udp", kCorosyncPort);
      heal = [host] { (void)HealPort(*host, "udp", kCorosyncPort); };
      break;
    case Fault::kRestartCorosync: {
      auto pid = CorosyncPid(*host);
      injected = pid.ok() ? Signal(*pid, SIGKILL) : pid.status();
      // Started once, however often heal() is called.
      heal = [host, started = std::make_shared<bool>(false), &extra] {
        if (std::exchange(*started, true)) return;
        Status st = StartCorosync(*host);
        extra["corosync_started"] = st.ok() ? "yes" : st.message();
      };
      break;
    }
    case Fault::kKillHostMidMove: {
      auto asked = AgentCall(*host, {{"op", "move"}, {"vm", vm}, {"to", move_to}});
      if (!asked.ok()) {
        injected = asked.status().Annotate("move " + vm + " to " + move_to);
        break;
      }
      // Kill once the owner has begun switching its standby to the target (or has handed over).
      const uint64_t t_move = RealtimeMs();
      uint64_t t_switch = 0;
      while (!t_switch && RealtimeMs() - t_move < o.timeout_s * 1000) {
        ::usleep(20 * 1000);
        auto s = AgentCall(*host, {{"op", "status"}});
        if (s.ok()) t_switch = EventTime(*s, t_move, {"switch-standby", "handover"}, vm);
      }
      if (!t_switch) {
        injected = Timeout("the move of " + vm + " to " + move_to + " never began switching its standby");
        break;
      }
      SleepS(o.after_s);
      extra["killed_after_switch_ms"] = RealtimeMs() - t_switch;
      extra["move_to"] = move_to;
      t_fault = RealtimeMs();
      injected = KillHost(*host);
      break;
    }
  }
  if (!injected.ok()) {
    heal();
    return injected.Annotate(std::string("drill ") + FaultName(fault) + " " + o.target);
  }

  DrillOptions wo = o;  // a stopped VMM is continued after stop_s, whatever else heals when
  if (fault == Fault::kStopVm) wo.heal_after_s = o.stop_s;
  Watch w{c, vm, owner, old_gen, t_fault, wo};
  bool met = false;
  if (expected == Outcome::kFailover) {
    met = w.UntilFailover(fault == Fault::kKillVm || fault == Fault::kStopVm ? "" : at);
    if (fault == Fault::kPartitionHost || fault == Fault::kCutCorosync || fault == Fault::kRestartCorosync) {
      w.FencedAndRejoined(*host, heal, &extra);
    }
  } else if (expected == Outcome::kReprotect) {
    met = w.UntilReprotected(heal);
  } else {
    SleepS(o.stop_s);
    heal();
    SleepS(3);
    met = w.StillServing(10000);
  }
  heal();
  if (expected != Outcome::kFailover) SleepS(1);  // the client sees the end of the fault too
  else SleepS(2);                                  // the client sees the service back
  sampler.Stop();
  const json load = client.Finish();
  if (!load.is_object()) return Internal("drill: the load client printed no result (see " + host->dir + "/drill-client.json)");

  json card = w.Card(load, expected == Outcome::kFailover ? sampler.SentAfter(w.t_promoted()) : false, sampler.epochs());
  card["fault"] = std::string(FaultName(fault)) + " " + o.target;
  card["expected"] = OutcomeName(expected);
  card["outcome_met"] = met;
  card["from"] = at;
  card.update(extra);
  const bool bad = card.value("lost_writes", uint64_t{0}) > 0 || card.value("split_brain", false) || !met;
  card["ok"] = !bad;
  return card;
}

}  // namespace ferry::ha
