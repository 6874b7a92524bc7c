// The agent's loop body: views and messages in, probe and report, decide, act; and the
// bookkeeping of each owned VM's protection (re-protection with backoff, said loudly).
#include "ferry/ha/agent.h"

#include <atomic>
#include <cstdio>
#include <list>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/ha/metrics.h"

namespace ferry::ha {

using nlohmann::json;
using replication::ReplicationState;

// The default runner: a thread per long operation, joined once it has finished (at the next
// start or at Shutdown), so none is ever left unjoined.
struct Agent::Workers {
  std::mutex mu;
  std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> threads;

  void Run(std::function<void()> fn) {
    std::lock_guard lock(mu);
    JoinFinished();
    auto done = std::make_shared<std::atomic<bool>>(false);
    threads.emplace_back(std::thread([fn = std::move(fn), done] {
                           Status st = Guarded("an agent worker", fn);
                           if (!st.ok()) FERRY_LOG_ERROR("%s", st.message().c_str());
                           *done = true;
                         }),
                         done);
  }
  void JoinFinished() {
    for (auto it = threads.begin(); it != threads.end();) {
      if (*it->second) {
        it->first.join();
        it = threads.erase(it);
      } else {
        ++it;
      }
    }
  }
  void JoinAll() {
    std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> all;
    {
      std::lock_guard lock(mu);
      all.swap(threads);
    }
    for (auto& [t, done] : all) t.join();
  }
};

Agent::Agent(const ClusterConfig& config, const HostConfig& self, Executor& executor, Group& group, AgentOptions options,
             uint64_t now_ms, AgentMetrics* metrics)
    : config_(config),
      self_(self),
      executor_(executor),
      group_(group),
      options_(std::move(options)),
      metrics_(metrics),
      started_ms_(now_ms),
      state_(std::make_unique<ClusterState>(config, self.name)),
      now_ms_(now_ms),
      self_heard_ms_(now_ms),
      workers_(std::make_unique<Workers>()) {
  // The hung-agent rule (cluster_state.h), with a lease only: silent after kSilenceReports
  // report periods; its leases may have been renewed up to kSelfSilenceReports periods after
  // its last message the others heard, plus a margin for delivery skew between members.
  if (config_.lease_ms) {
    state_->set_silence(options_.report_every_ms * kSilenceReports, options_.report_every_ms * kSelfSilenceReports,
                        kDeliverySkewMs);
  }
}

Agent::~Agent() { Shutdown(); }

void Agent::Shutdown() {
  {
    std::lock_guard lock(mu_);
    shut_down_ = true;
  }
  workers_->JoinAll();
}

void Agent::Event(const std::string& kind, const std::string& vm, const std::string& detail, const json& extra) {
  json e = {{"t_ms", RealtimeMs()}, {"host", self_.name}, {"kind", kind}, {"vm", vm}, {"detail", detail}};
  e.update(extra);
  std::fprintf(stderr, "ferry ha agent %s: %s %s %s\n", self_.name.c_str(), kind.c_str(), vm.c_str(), detail.c_str());
  events_.push_back(e);
  if (events_.size() > 256) events_.pop_front();
}

void Agent::Send(const std::string& payload) {
  if (group_lost_) return;  // said once, by the corosync-lost event
  if (Status st = group_.Send(payload); !st.ok()) Event("send-failed", "", st.message());
}

void Agent::OnGroupLost(const std::string& why, uint64_t now_ms) {
  {
    std::lock_guard lock(mu_);
    if (group_lost_) return;
    group_lost_ = true;
    Event("corosync-lost", "", why);
  }
  OnView({self_.name}, false, now_ms);
}

void Agent::OnGroupRejoined() {
  std::lock_guard lock(mu_);
  if (!group_lost_) return;
  group_lost_ = false;
  Event("corosync-back", "", "rejoined the group");
}

void Agent::OnView(const std::set<std::string>& members, bool quorate, uint64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto& before = state_->members();
  for (const auto& m : before) {
    if (!members.count(m)) Event("member-left", "", m);
  }
  for (const auto& m : members) {
    if (!before.count(m)) Event("member-joined", "", m);
  }
  if (quorate != state_->quorate()) Event(quorate ? "quorum-gained" : "quorum-lost", "", "");
  state_->OnView(members, quorate, now_ms);
  last_report_ms_ = 0;  // report again in the new view
}

void Agent::OnMessage(const std::string& host, const std::string& payload, uint64_t received_ms) {
  std::lock_guard lock(mu_);
  if (host == self_.name) self_heard_ms_ = std::max(self_heard_ms_.load(), received_ms ? received_ms : now_ms_);
  state_->OnMessage(host, payload, received_ms);
}

void Agent::Worker(const std::string& vm, std::function<void()> fn) {
  if (shut_down_) return;
  busy_.insert(vm);
  auto task = [this, vm, fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      std::lock_guard lock(mu_);
      Event("error", vm, std::string("worker: ") + e.what());
    }
    std::lock_guard lock(mu_);
    busy_.erase(vm);
  };
  // Starting the worker can fail (no thread left: std::system_error; no memory): the VM is
  // then not busy, and a later tick decides again. Nothing escapes into the caller's loop.
  try {
    if (options_.run_async) {
      options_.run_async(std::move(task));
    } else {
      workers_->Run(std::move(task));
    }
  } catch (const std::exception& e) {
    busy_.erase(vm);
    Event("error", vm, std::string("could not start a worker: ") + e.what());
  }
}

void Agent::ReprotectFailed(const std::string& vm, const std::string& host, const std::string& why, uint64_t now_ms) {
  Protection& p = protection_[vm];
  if (!host.empty()) state_->protect_avoid[vm] = {host, now_ms + options_.avoid_failed_host_ms};
  ++p.attempts;
  const uint32_t shift = std::min<uint32_t>(p.attempts - 1, 20);
  const uint64_t delay = std::min(options_.backoff_max_ms, options_.backoff_min_ms << shift);
  p.not_before_ms = now_ms + delay;
  p.last_error = why;
  state_->protect_not_before[vm] = p.not_before_ms;
  if (metrics_) metrics_->OnReprotectAttempt(vm);
  Event("reprotect-failed", vm,
        why + "; try " + std::to_string(p.attempts) + ", next in " + std::to_string(delay) + " ms",
        {{"attempts", p.attempts}, {"backoff_ms", delay}});
}

// Which owned VMs run without a protected standby, since when; loud while it lasts.
void Agent::TrackProtection(const std::vector<Instance>& local, uint64_t now_ms) {
  std::set<std::string> owned;
  for (const auto& i : local) {
    const Claim* c = state_->claim(i.vm);
    if (!i.Runs() || !c || c->host != self_.name || c->generation != i.generation) continue;
    owned.insert(i.vm);
    Protection& p = protection_[i.vm];
    if (i.Replicating()) state_->output_released.erase(i.vm);
    if (i.ReplicationIs(ReplicationState::kProtected)) {
      if (p.unprotected_since_ms) {
        Event("protected", i.vm, "by " + i.standby_host + " after " + std::to_string(now_ms - p.unprotected_since_ms) +
                                     " ms unprotected",
              {{"unprotected_ms", now_ms - p.unprotected_since_ms}, {"standby", i.standby_host}});
      }
      p = Protection{};
      state_->protect_not_before.erase(i.vm);
      warned_ms_.erase(i.vm);
      if (metrics_) metrics_->SetUnprotected(i.vm, 0);
      continue;
    }
    if (i.ReplicationIs(ReplicationState::kFailed) && !i.standby_host.empty()) {
      auto avoid = state_->protect_avoid.find(i.vm);
      if (avoid == state_->protect_avoid.end() || avoid->second.first != i.standby_host) {
        state_->protect_avoid[i.vm] = {i.standby_host, now_ms + options_.avoid_failed_host_ms};
        Event("standby-lost", i.vm, "replication to " + i.standby_host + " failed; re-protecting, other hosts first");
      }
    }
    if (!p.unprotected_since_ms) p.unprotected_since_ms = now_ms;
    const uint64_t for_ms = now_ms - p.unprotected_since_ms;
    if (metrics_) metrics_->SetUnprotected(i.vm, for_ms / 1000.0);
    uint64_t& warned = warned_ms_[i.vm];
    if (for_ms >= options_.unprotected_warn_every_ms && now_ms - warned >= options_.unprotected_warn_every_ms) {
      warned = now_ms;
      std::string why = p.last_error.empty() ? "no standby yet" : "last try: " + p.last_error;
      bool anywhere = false;
      for (const auto& h : config_.hosts) anywhere |= h.name != self_.name && state_->live(h.name) && !state_->evacuating(h.name);
      if (!anywhere) why = "no other live host can hold its standby";
      Event("unprotected", i.vm, "running unprotected for " + std::to_string(for_ms / 1000) + " s: " + why,
            {{"unprotected_ms", for_ms}, {"attempts", p.attempts}});
    }
  }
  for (auto it = protection_.begin(); it != protection_.end();) {
    if (owned.count(it->first)) {
      ++it;
      continue;
    }
    if (metrics_) metrics_->SetUnprotected(it->first, 0);
    warned_ms_.erase(it->first);
    it = protection_.erase(it);
  }
}

void Agent::Tick(uint64_t now_ms) {
  // When this tick ends, on the agent's clock: the gap to the next one is time the agent was
  // not running, not time a tick spent (a slow VMM's fence call is not a stall).
  struct TickEnd {
    uint64_t& end;
    uint64_t now, t0 = MonotonicMs();
    ~TickEnd() { end = now + (MonotonicMs() - t0); }
  } tick_end{last_tick_end_ms_, now_ms};
  if (!adopted_) {  // a restarted agent takes on the VMMs still running here first
    adopted_ = true;
    std::vector<std::string> vms = executor_.Adopt();
    std::lock_guard lock(mu_);
    for (const auto& vm : vms) Event("adopted", vm, "a VMM that outlived the previous agent");
  }
  // Processes and probes first, without the lock: a slow VMM never delays the API.
  std::vector<Ended> ended = executor_.Reap();
  // With a lease, leases are renewed only while this agent's own messages come back: when they
  // stop, the others will count it as hung (ClusterState::silent) and fail its VMs over once
  // the lease has run out, so the lease must really run out here too.
  const bool renew = config_.lease_ms == 0 || now_ms < self_heard_ms_.load() + options_.report_every_ms * kSelfSilenceReports;
  std::vector<Instance> local = executor_.Probe(renew);
  const json stats = executor_.Stats();
  std::lock_guard lock(mu_);
  if (shut_down_) return;
  now_ms_ = now_ms;
  state_->now_ms = now_ms;
  // This agent itself did not run (SIGSTOP, CPU stolen from its host, swapping): its own
  // messages did not come back because it sent none, not because the group lost them. It
  // reports now and waits up to self_silence for that report to come back before it judges
  // itself cut off and fences its primaries (an outage, and a broken replication, for
  // nothing). Its leases stay unrenewed until the report is back (`renew` above), so a VMM
  // whose lease ran out meanwhile has fenced itself, before any failover the others may
  // start (they wait the lease). Found by AgentSimDrills' outcome checks: an agent stopped
  // 1.4-2 s, well within its 2 s lease, fenced its primary on waking and the VM moved to a
  // new generation, where `ferry drill --stop-agent` expects nothing.
  // (last_tick_end_ms_ is still the previous tick's end: tick_end sets it as this one ends.)
  if (config_.lease_ms && last_tick_end_ms_ && now_ms > last_tick_end_ms_ + options_.report_every_ms) {
    Event("stalled", "", "this agent did not run for " + std::to_string(now_ms - last_tick_end_ms_) +
                             " ms: it reports before it judges itself cut off");
    state_->Stalled(now_ms);
  }
  if (renew != renewing_) {
    Event(renew ? "lease-renewed" : "lease-held", "",
          renew ? "this agent's own messages come back again" : "this agent's own messages stopped coming back: leases run out");
    renewing_ = renew;
  }
  for (const auto& e : ended) {
    Event("process-ended", e.vm, std::string(RoleName(e.role)) + " (" + e.how + ")");
    fence_unanswered_ms_.erase(e.vm);
  }
  if (!state_->startup_grace_over && now_ms - started_ms_ > options_.startup_grace_ms) state_->startup_grace_over = true;
  // Requests that nothing came of are forgotten, so they are made again.
  for (auto it = claim_ms_.begin(); it != claim_ms_.end();) {
    if (now_ms - it->second > options_.claim_retry_ms) {
      state_->pending_claim.erase(it->first);
      it = claim_ms_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = protect_ms_.begin(); it != protect_ms_.end();) {
    if (now_ms - it->second > options_.protect_retry_ms) {
      auto sent = state_->protect_sent.find(it->first);
      if (sent != state_->protect_sent.end()) {
        ReprotectFailed(it->first, sent->second, "no standby came up on " + sent->second + " within " +
                                       std::to_string(options_.protect_retry_ms) + " ms", now_ms);
      }
      state_->protect_sent.erase(it->first);
      it = protect_ms_.erase(it);
    } else {
      ++it;
    }
  }
  last_stats_ = stats;
  // Reports go out at every change of what decisions read, and at least every
  // report_every_ms with the counters (checkpoints acknowledged or committed, frames sent).
  // Those move with every checkpoint: reporting each of their changes flooded the group (every
  // delivery wakes every agent, whose next tick had a counter of its own to report).
  bool changed = local.size() != last_sent_.size();
  for (size_t i = 0; !changed && i < local.size(); ++i) changed = local[i].Differs(last_sent_[i]);
  last_local_ = local;
  if (metrics_) {
    std::map<std::string, bool> moving;
    for (const auto& [vm, to] : state_->moves()) {
      const Claim* c = state_->claim(vm);
      moving[vm] = c && c->host == self_.name;
    }
    metrics_->Update(state_->quorate(), state_->members().size(), stats, moving);
  }
  // Load figures ride on the reports: at least every report_every_ms, and at every change.
  if (changed || now_ms - last_report_ms_ > options_.report_every_ms) {
    Send(ClusterState::ReportMessage(self_.name, local, stats, state_->claims(), state_->evacuations()));
    last_sent_ = local;
    last_report_ms_ = now_ms;
  }
  // Quorum is asked afresh before acting: a stale "quorate" must not let a cut-off host act.
  if (state_->quorate() && !group_.QuorateNow()) return;
  TrackProtection(local, now_ms);
  for (const auto& a : Decide(config_, self_.name, *state_, local, busy_)) Execute(a);
  MaybeBalanceLocked(now_ms);
}

std::set<std::string> Agent::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

std::map<std::string, Protection> Agent::protection() const {
  std::lock_guard lock(mu_);
  return protection_;
}

std::vector<json> Agent::events() const {
  std::lock_guard lock(mu_);
  return {events_.begin(), events_.end()};
}

}  // namespace ferry::ha
