// ferry drill: a fault injected on purpose into a running HA cluster under load, and its
// scorecard (ha-manager/drill.h runs it; this is flags and printing).
#include <unistd.h>

#include <cstdio>

#include "cli_util.h"
#include "commands.h"
#include "ferry/ha/config.h"
#include "ferry/ha/drill.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct DrillFlags {
  std::string config;
  std::map<ha::Fault, std::string> targets;  // the fault flags given
  ha::DrillOptions o;
  bool json_out = false;
};

void Print(const json& card) {
  std::printf("drill %s (expected: %s): %s\n", card.value("fault", "").c_str(), card.value("expected", "").c_str(),
              card.value("ok", false) ? "passed" : "FAILED");
  std::printf("  %s now on %s at generation %llu; outcome %s\n", card.value("vm", "").c_str(), card.value("to", "").c_str(),
              static_cast<unsigned long long>(card.value("generation", uint64_t{0})),
              card.value("outcome_met", false) ? "as expected" : "NOT as expected");
  if (card.contains("promote_ms")) {
    std::printf("  detection %lld ms, promotion %lld ms, RPO %lld checkpoint(s)\n",
                static_cast<long long>(card.value("detect_ms", int64_t{-1})), static_cast<long long>(card.value("promote_ms", int64_t{-1})),
                static_cast<long long>(card.value("rpo_epochs", int64_t{-1})));
  }
  if (card.contains("reprotect_ms")) {
    std::printf("  unprotected %lld ms after the fault, protected again after %lld ms by %s\n",
                static_cast<long long>(card.value("unprotected_after_ms", int64_t{-1})),
                static_cast<long long>(card.value("reprotect_ms", int64_t{-1})), card.value("reprotected_by", "").c_str());
  }
  std::printf("  client gap (RTO) %.0f ms; acknowledged writes lost: %llu of %llu; two primaries: %s\n", card.value("rto_ms", 0.0),
              static_cast<unsigned long long>(card.value("lost_writes", uint64_t{0})),
              static_cast<unsigned long long>(card.value("acked_puts", uint64_t{0})), card.value("split_brain", false) ? "YES" : "never");
  if (card.contains("rejoined_as")) {
    std::printf("  minority fenced %lld ms after the cut (%s the promotion); after healing the old host is: %s\n",
                static_cast<long long>(card.value("fenced_after_ms", int64_t{-1})),
                card.value("fenced_before_promote", false) ? "before" : "NOT before", card.value("rejoined_as", "").c_str());
  }
}

int Drill(DrillFlags& f) {
  auto loaded = ha::ClusterConfig::Load(f.config);
  if (!loaded.ok()) return Fail(loaded.status().message(), kExitUsage);
  if (f.targets.size() != 1) {
    std::string all;
    for (int i = 0; i < ha::kFaultCount; ++i) all += std::string(i ? ", --" : "--") + ha::FaultName(static_cast<ha::Fault>(i));
    return Fail("give exactly one fault: " + all, kExitUsage);
  }
  f.o.fault = f.targets.begin()->first;
  f.o.target = f.targets.begin()->second;
  char self_exe[4096] = {};
  if (::readlink("/proc/self/exe", self_exe, sizeof self_exe - 1) <= 0) return Fail("cannot find the ferry binary");
  f.o.exe = self_exe;
  auto card = ha::RunDrill(*loaded, f.o);
  if (!card.ok()) return Fail(card.status().message(), ExitCodeFor(card.status()));
  if (f.json_out) {
    std::printf("%s\n", card->dump().c_str());
  } else {
    Print(*card);
  }
  return ha::DrillFailed(*card) ? kExitError : kExitOk;
}

}  // namespace

void AddDrillCommand(CLI::App& app, CommandFn* selected) {
  auto f = std::make_shared<DrillFlags>();
  CLI::App* d = app.add_subcommand("drill", "Inject a fault into an HA cluster under load and print a scorecard");
  d->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  const std::pair<ha::Fault, const char*> faults[] = {
      {ha::Fault::kKillHost, "SIGKILL every process of this host and cut its link (expect a failover)"},
      {ha::Fault::kPartitionHost, "Cut this host off the others, heal after --heal-after-s (expect a failover, the old host fenced)"},
      {ha::Fault::kKillVm, "SIGKILL this VM's primary process (expect a failover)"},
      {ha::Fault::kKillAgent, "SIGKILL this host's HA agent (its VMMs end with it: expect a failover)"},
      {ha::Fault::kStopAgent, "SIGSTOP this host's HA agent for --stop-s (expect nothing; with a lease, a stop longer than the lease + 3 s: a failover, "
                              "and one from the lease - 0.5 s to there is refused as ambiguous)"},
      {ha::Fault::kCutReplication, "Cut only this VM's replication path, heal after --heal-after-s (expect re-protection)"},
      {ha::Fault::kCutCorosync, "Cut only this host's Corosync traffic, heal after --heal-after-s (expect a failover)"},
      {ha::Fault::kKillStandby, "SIGKILL this VM's standby process (expect re-protection)"},
      {ha::Fault::kStopVm, "SIGSTOP this VM's primary process for --stop-s, a hung VMM (within io_timeout_ms: expect nothing; "
                           "past it: re-protection; past hung_vmm_ms + 3 s: its agent kills it, a failover)"},
      {ha::Fault::kKillHostMidMove, "Move this host's VM to --move-to and kill the host --after-s into it (expect a failover)"},
      {ha::Fault::kRestartCorosync, "SIGKILL this host's Corosync, start it again (the host's corosync_start) after --heal-after-s "
                                    "(expect a failover, the old host fenced, its agent rejoining as the backup)"},
  };
  for (const auto& [fault, help] : faults) {
    const ha::Fault k = fault;
    d->add_option_function<std::string>(std::string("--") + ha::FaultName(k),
                                        [f, k](const std::string& t) { f->targets[k] = t; }, help);
  }
  d->add_option("--vm", f->o.vm, "The VM whose service the client loads (default: the first on the faulted host)");
  d->add_option("--move-to", f->o.move_to, "kill-host-mid-move: the move's target (default: a host with no copy)");
  d->add_option("--rate", f->o.rate, "Client requests per second")->capture_default_str()->check(CLI::Range(1.0, 1e6) & kFinite);
  d->add_option("--keys", f->o.keys, "Client keys (the guest's keys= must be at least this)")->capture_default_str();
  d->add_option("--heal-after-s", f->o.heal_after_s, "Cuts: heal this long after the fault (partition: after the promotion)")
      ->capture_default_str()->check(CLI::Range(0.0, 3600.0) & kFinite);
  d->add_option("--stop-s", f->o.stop_s, "stop-agent, stop-vm: how long the agent or the VMM stays stopped")
      ->capture_default_str()->check(CLI::Range(0.0, 3600.0) & kFinite);
  d->add_option("--after-s", f->o.after_s, "kill-host-mid-move: kill this long after the standby switch began")
      ->capture_default_str()->check(CLI::Range(0.0, 3600.0) & kFinite);
  d->add_option("--timeout-s", f->o.timeout_s, "Give up if the expected outcome has not come by then")
      ->capture_default_str()->check(CLI::Range(1.0, 3600.0) & kFinite);
  d->add_flag("--json", f->json_out, "Print the scorecard as one JSON object");
  d->callback([selected, f] { *selected = [f] { return Drill(*f); }; });
}

}  // namespace ferry::cli
