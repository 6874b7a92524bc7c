#include "ha_agent.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/units.h"
#include "ferry/ha/cluster_state.h"
#include "ferry/ha/membership.h"
#include "ferry/migrate/auth.h"
#include "ha_agent_impl.h"
#include "cli_util.h"
#include "ferry/vmhost/lifecycle.h"

namespace ferry::cli {

using nlohmann::json;
using ha::Action;
using ha::Instance;

std::string AgentSocket(const ha::HostConfig& host) { return host.dir + "/agent.sock"; }

void Agent::Event(const std::string& kind, const std::string& vm, const std::string& detail, const json& extra) {
  json e = {{"t_ms", RealtimeMs()}, {"host", self_->name}, {"kind", kind}, {"vm", vm}, {"detail", detail}};
  e.update(extra);
  std::fprintf(stderr, "ferry ha agent %s: %s %s %s\n", self_->name.c_str(), kind.c_str(), vm.c_str(), detail.c_str());
  events_.push_back(e);
  if (events_.size() > 256) events_.pop_front();
}

void Agent::Send(const std::string& payload) {
  if (Status st = membership_->Send(payload); !st.ok()) Event("send-failed", "", st.message());
}

void Agent::OnView(const ha::View& v) {
  std::set<std::string> members;
  for (uint32_t id : v.members) {
    if (const auto* h = config_.HostByNode(id)) members.insert(h->name);
  }
  const auto& before = state_->members();
  for (const auto& m : before) {
    if (!members.count(m)) Event("member-left", "", m);
  }
  for (const auto& m : members) {
    if (!before.count(m)) Event("member-joined", "", m);
  }
  if (v.quorate != state_->quorate()) Event(v.quorate ? "quorum-gained" : "quorum-lost", "", "");
  state_->OnView(members, v.quorate, RealtimeMs());
  last_report_ms_ = 0;  // report again in the new view
}

pid_t Agent::Spawn(const std::string& vm, std::vector<std::string> args) {
  std::string log = self_->dir + "/" + vm + ".log";
  args.insert(args.begin(), "ferry");
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

void Agent::Reap() {
  for (auto it = children_.begin(); it != children_.end();) {
    int status = 0;
    pid_t r = waitpid(it->second.pid, &status, WNOHANG);
    if (r == it->second.pid) {
      std::string how = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                          : "signal " + std::to_string(WTERMSIG(status));
      Event("process-ended", it->first, it->second.role + " (" + how + ")");
      it = children_.erase(it);
    } else {
      ++it;
    }
  }
}

// This host's instances, asked of each child's API (a child not answering yet is listed as
// starting, so nothing else is started for that VM meanwhile).
std::vector<Instance> Agent::Probe() {
  std::vector<Instance> out;
  for (const auto& [vm, child] : children_) {
    Instance i;
    i.vm = vm;
    i.role = child.role;
    i.generation = child.generation;
    i.state = "starting";
    auto r = CallApi(Sock(vm), {{"op", "status"}}, 1000);
    if (r.ok()) {
      sampler_->Observe(vm, child.pid, *r, RealtimeMs());
      const json& rep = (*r)["replication"];
      const json& ha = (*r)["ha"];
      // The VMM's lifecycle phase, parsed once here at the JSON edge.
      const auto phase = vmhost::ParsePhase((*r).value("state", ""));
      if (phase == vmhost::Phase::kStandby || phase == vmhost::Phase::kPromoting) {
        i.role = "standby";
        i.state = rep.value("state", "");
        i.committed = rep.value("committed_epoch", uint64_t{0});
      } else {
        i.role = "primary";
        i.state = phase && vmhost::GuestRuns(*phase) ? "running" : (*r).value("state", "");
        if (ha.is_object()) {
          i.generation = ha.value("generation", child.generation);
          i.fenced = ha.value("fenced", false);
        }
        if (rep.is_object()) {
          i.replication = rep.value("state", "");
          i.output_held = rep.value("output_held", false);
          i.epochs = rep.value("epochs", uint64_t{0});
          std::string to = rep.value("standby", "");
          for (const auto& h : config_.hosts) {
            if (to.rfind(h.address + ":", 0) == 0) i.standby_host = h.name;
          }
        }
        const json& nic = (*r)["devices"]["nic"];
        if (nic.is_object()) i.tx_frames = nic.value("tx_frames", uint64_t{0});
      }
    }
    out.push_back(i);
  }
  sampler_->EndRound();
  return out;
}

void Agent::Worker(const std::string& vm, std::function<void()> fn) {
  busy_.insert(vm);
  workers_.emplace_back([this, vm, fn] {
    fn();
    std::lock_guard lock(mu_);
    busy_.erase(vm);
  });
}

void Agent::Execute(const Action& a) {
  const ha::VmSpec& v = *config_.Vm(a.vm);
  const std::string gen = std::to_string(a.generation);
  Event(ha::ActionName(a.kind), a.vm, "generation " + gen + (a.host != self_->name ? " " + a.host : "") + ": " + a.why);
  switch (a.kind) {
    case Action::kClaim:
      state_->pending_claim[a.vm] = a.generation;
      claim_ms_[a.vm] = RealtimeMs();
      Send(ha::ClusterState::ClaimMessage(a.vm, ha::Claim{a.generation, self_->name, a.why}));
      break;
    case Action::kProtect:
      state_->protect_sent[a.vm] = a.host;
      protect_ms_[a.vm] = RealtimeMs();
      Send(ha::ClusterState::ProtectMessage(a.vm, a.host, a.generation));
      break;
    case Action::kStartPrimary:
    case Action::kStartStandby: {
      std::string disk = self_->dir + "/" + v.name + ".img";
      if (v.disk_bytes) {
        struct stat sb {};
        if (a.kind == Action::kStartStandby || ::stat(disk.c_str(), &sb) != 0) {
          // A standby's image is filled by the initial sync; a new primary starts blank.
          int fd = ::open(disk.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
          if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(v.disk_bytes)) != 0) {
            Event("error", a.vm, "cannot create the disk image " + disk);
            if (fd >= 0) ::close(fd);
            break;
          }
          ::close(fd);
        }
      }
      std::vector<std::string> args;
      if (a.kind == Action::kStartPrimary) {
        args = {"run", v.guest, "--mem", v.mem, "--vcpus", std::to_string(v.vcpus), "--generation", gen};
      } else {
        args = {"standby", "--listen", self_->address + ":" + std::to_string(v.port), "--min-generation", gen,
                "--io-timeout-ms", std::to_string(config_.io_timeout_ms)};
        if (!config_.key_file.empty()) args.insert(args.end(), {"--key", config_.key_file});
      }
      args.insert(args.end(), {"--api", Sock(v.name)});
      if (v.disk_bytes) args.insert(args.end(), {"--disk", disk});
      if (v.net) args.insert(args.end(), {"--net", "fv" + std::to_string(v.port) + ",bridge=" + self_->guest_bridge});
      if (a.kind == Action::kStartPrimary && !v.guest_args.empty()) {
        args.push_back("--");
        args.insert(args.end(), v.guest_args.begin(), v.guest_args.end());
      }
      ::unlink(Sock(v.name).c_str());
      pid_t pid = Spawn(v.name, args);
      if (pid < 0) {
        Event("error", a.vm, "fork failed");
        break;
      }
      children_[v.name] = Child{pid, a.kind == Action::kStartPrimary ? "primary" : "standby", a.generation, RealtimeMs()};
      if (a.kind == Action::kStartPrimary) state_->launched[v.name] = a.generation;
      break;
    }
    case Action::kPromote:
      state_->launched[a.vm] = a.generation;
      Worker(a.vm, [this, a] {
        auto r = CallApi(Sock(a.vm), {{"op", "promote"}, {"force", true}, {"generation", a.generation}}, 30000);
        std::lock_guard lock(mu_);
        Event(r.ok() ? "promoted" : "promote-failed", a.vm,
              r.ok() ? "checkpoint " + std::to_string((*r).value("epoch", uint64_t{0})) + ", " +
                           std::to_string((*r).value("promote_ms", 0.0)) + " ms"
                     : r.status().message(),
              r.ok() ? json{{"to", self_->name}, {"promote_ms", (*r).value("promote_ms", 0.0)}, {"generation", a.generation}}
                     : json::object());
        if (r.ok() && metrics_) metrics_->OnFailover(a.vm);
      });
      break;
    case Action::kReplicate: {
      state_->protect_sent.erase(a.vm);
      const ha::HostConfig* to = config_.Host(a.host);
      json req = {{"op", "replicate"}, {"to", to->address + ":" + std::to_string(v.port)}, {"generation", a.generation},
                  {"hold_on_failure", true}, {"interval_ms", config_.interval_ms}, {"io_timeout_ms", config_.io_timeout_ms},
                  {"sync_bandwidth", v.sync_bandwidth},
                  {"wait_ms", 60000}};
      if (!config_.key_file.empty()) {
        auto key = migrate::LoadKey(config_.key_file);
        if (!key.ok()) {
          Event("error", a.vm, key.status().message());
          break;
        }
        req["key"] = KeyToHex(key->bytes);
      }
      Worker(a.vm, [this, a, req] {
        auto r = CallApi(Sock(a.vm), req, 70000);
        std::lock_guard lock(mu_);
        Event(r.ok() ? "protected" : "replicate-failed", a.vm, r.ok() ? "by " + a.host : r.status().message());
      });
      break;
    }
    case Action::kStopReplication:
      Worker(a.vm, [this, a] {
        auto r = CallApi(Sock(a.vm), {{"op", "replicate_stop"}}, 10000);
        if (!r.ok()) {
          std::lock_guard lock(mu_);
          Event("error", a.vm, "replicate_stop: " + r.status().message());
        }
      });
      break;
    case Action::kHandover:
      Worker(a.vm, [this, a] {
        auto r = CallApi(Sock(a.vm), {{"op", "handover"}, {"generation", a.generation}}, 30000);
        std::lock_guard lock(mu_);
        if (r.ok()) {
          const double downtime = (*r).value("downtime_ms", 0.0);
          Event("handed-over", a.vm, "to " + a.host + ", downtime " + std::to_string(downtime) + " ms: " + a.why,
                {{"from", self_->name}, {"to", a.host}, {"downtime_ms", downtime}, {"generation", a.generation}});
          if (metrics_) metrics_->OnMigrated(a.vm, downtime);
          Send(ha::ClusterState::ClaimMessage(a.vm, ha::Claim{a.generation, a.host, "handover"}));
        } else {
          Event("handover-failed", a.vm, r.status().message());
        }
      });
      break;
    case Action::kReleaseOutput:
    case Action::kFence:
    case Action::kUnfence: {
      const char* op = a.kind == Action::kFence ? "fence" : a.kind == Action::kUnfence ? "unfence" : "release_output";
      auto r = CallApi(Sock(a.vm), {{"op", op}}, 3000);
      if (r.ok() && a.kind == Action::kFence && metrics_) metrics_->OnFence();
      if (!r.ok()) Event("error", a.vm, std::string(op) + ": " + r.status().message());
      break;
    }
    case Action::kKill: {
      auto it = children_.find(a.vm);
      if (it != children_.end()) ::kill(it->second.pid, SIGKILL);  // reaped by Reap()
      break;
    }
  }
}

void Agent::Tick() {
  Reap();
  const uint64_t now = RealtimeMs();
  state_->now_ms = now;
  if (!state_->startup_grace_over && now - started_ms_ > 10000) state_->startup_grace_over = true;
  // Requests that nothing came of are forgotten, so they are made again.
  for (auto it = claim_ms_.begin(); it != claim_ms_.end();) {
    if (now - it->second > 3000) {
      state_->pending_claim.erase(it->first);
      it = claim_ms_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = protect_ms_.begin(); it != protect_ms_.end();) {
    if (now - it->second > 5000) {
      state_->protect_sent.erase(it->first);
      it = protect_ms_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<Instance> local = Probe();
  bool changed = local.size() != last_sent_.size();
  for (size_t i = 0; !changed && i < local.size(); ++i) changed = local[i].ToJson() != last_sent_[i].ToJson();
  const json stats = sampler_->Stats();
  if (metrics_) {
    std::map<std::string, bool> moving;
    for (const auto& [vm, to] : state_->moves()) {
      const ha::Claim* c = state_->claim(vm);
      moving[vm] = c && c->host == self_->name;
    }
    metrics_->Update(state_->quorate(), state_->members().size(), stats, moving);
  }
  // Load figures ride on the reports: at least every second, and at every change of state.
  if (changed || now - last_report_ms_ > 1000) {
    Send(ha::ClusterState::ReportMessage(self_->name, local, stats));
    last_sent_ = local;
    last_report_ms_ = now;
  }
  // Quorum is asked afresh before acting: a stale "quorate" must not let a cut-off host act.
  if (state_->quorate() && !membership_->QuorateNow()) return;
  for (const auto& a : ha::Decide(config_, self_->name, *state_, local, busy_)) Execute(a);
  MaybeBalance(now);
}

int Agent::Run() {
  SignalWatcher signals([this] { stop_ = true; });
  started_ms_ = RealtimeMs();
  ha::Membership::Callbacks cb;
  cb.on_view = [this](const ha::View& v) { OnView(v); };
  cb.on_message = [this](uint32_t node, const std::string& payload) {
    const auto* h = config_.HostByNode(node);
    if (h) state_->OnMessage(h->name, payload);
  };
  auto m = ha::Membership::Join("ferry-ha-" + config_.name, cb);
  for (bool said = false; !m.ok() && !stop_ && RealtimeMs() - started_ms_ < wait_corosync_ms_;) {
    if (!said) std::fprintf(stderr, "ferry ha agent: waiting up to %.0f s for Corosync (%s)\n", wait_corosync_ms_ / 1000.0,
                            m.status().message().c_str());
    said = true;
    ::usleep(200000);
    m = ha::Membership::Join("ferry-ha-" + config_.name, cb);
  }
  if (!m.ok()) return Fail(m.status().message());
  membership_ = std::move(m).value();
  self_ = config_.HostByNode(membership_->local_nodeid());
  if (!self_) return Fail("this node's Corosync id " + std::to_string(membership_->local_nodeid()) + " is not in " + config_path_);
  state_ = std::make_unique<ha::ClusterState>(config_, self_->name);
  sampler_ = std::make_unique<LoadSampler>(*self_);
  if (!self_->metrics.empty()) {
    auto exporter = AgentMetrics::Start(self_->metrics, self_->name);
    if (!exporter.ok()) return Fail(exporter.status().message());
    metrics_ = std::move(exporter).value();
  }
  ::mkdir(self_->dir.c_str(), 0755);
  auto api = ApiServer::Start(AgentSocket(*self_), [this](const json& r, const ApiEmit&) { return Handle(r); });
  if (!api.ok()) return Fail(api.status().message());
  std::fprintf(stderr, "ferry ha agent: host %s (node %u) in cluster %s; API on %s\n", self_->name.c_str(),
               membership_->local_nodeid(), config_.name.c_str(), AgentSocket(*self_).c_str());
  int code = kExitOk;
  while (!stop_) {
    pollfd p{membership_->fd(), POLLIN, 0};
    int n = ::poll(&p, 1, 100);
    std::lock_guard lock(mu_);
    if (n > 0) {
      if (Status st = membership_->Dispatch(); !st.ok()) {
        Fail("lost Corosync: " + st.message());
        code = kExitError;
        break;
      }
    }
    Tick();
  }
  {
    std::lock_guard lock(mu_);
    for (auto& [vm, c] : children_) ::kill(c.pid, SIGKILL);
  }
  for (auto& t : workers_) t.join();
  std::lock_guard lock(mu_);
  for (auto& [vm, c] : children_) waitpid(c.pid, nullptr, 0);
  (*api)->Stop();
  return code;
}

int RunHaAgent(const ha::ClusterConfig& config, const std::string& config_path, double wait_corosync_s) {
  Agent agent(config, config_path, wait_corosync_s);
  return agent.Run();
}

}  // namespace ferry::cli
