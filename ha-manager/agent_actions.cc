// Agent::Execute: one decided action carried out through the Executor. Messages go to the
// group at once; start, kill, fence, unfence and release run here; replicate, stop, promote
// and hand over run on a worker and report back as events.
#include <string>

#include "ferry/base/clock.h"
#include "ferry/ha/agent.h"
#include "ferry/ha/metrics.h"

namespace ferry::ha {

using nlohmann::json;

void Agent::Execute(const Action& a) {
  // A fence that went unanswered (a hung or stopped VMM: the request waits in its socket) is
  // sent again once a second, not at every tick with an event each.
  if (a.kind == Action::kFence) {
    auto u = fence_unanswered_ms_.find(a.vm);
    if (u != fence_unanswered_ms_.end() && now_ms_ - u->second < kRefenceMs) return;
  }
  const VmSpec& v = *config_.Vm(a.vm);
  const std::string gen = std::to_string(a.generation);
  Event(ActionName(a.kind), a.vm, "generation " + gen + (a.host != self_.name ? " " + a.host : "") + ": " + a.why);
  switch (a.kind) {
    case Action::kClaim:
      // For this host, or (a failover handed back) for the host named.
      state_->pending_claim[a.vm] = a.generation;
      claim_ms_[a.vm] = now_ms_;
      if (a.host == self_.name) state_->claimed_here[a.vm] = a.generation;
      Send(ClusterState::ClaimMessage(a.vm, Claim{a.generation, a.host, a.why}));
      break;
    case Action::kProtect:
      state_->protect_sent[a.vm] = a.host;
      protect_ms_[a.vm] = now_ms_;
      Send(ClusterState::ProtectMessage(a.vm, a.host, a.generation));
      break;
    case Action::kStartPrimary:
      if (Status st = executor_.StartPrimary(v, a.generation); !st.ok()) {
        Event("error", a.vm, "start: " + st.message());
        break;
      }
      state_->launched[a.vm] = a.generation;
      break;
    case Action::kStartStandby:
      if (Status st = executor_.StartStandby(v, a.generation, a.host); !st.ok()) Event("error", a.vm, "standby: " + st.message());
      break;
    case Action::kPromote:
      state_->launched[a.vm] = a.generation;
      Worker(a.vm, [this, a] {
        auto r = executor_.Promote(a.vm, a.generation);
        std::lock_guard lock(mu_);
        if (!r.ok()) {
          Event("promote-failed", a.vm, r.status().message());
          // Refused, or no VMM to ask (it died first): the generation did not run here, and
          // OwnerHandsBackAStandbyItLost may hand the VM back. A lost answer (an I/O error, a
          // timeout) may hide a promotion that ran: then it stays counted as launched.
          const ErrorCode code = r.status().code();
          const bool never_ran = code == ErrorCode::kNotFound || code == ErrorCode::kInvalidArgument ||
                                 code == ErrorCode::kRefused || code == ErrorCode::kDenied ||
                                 code == ErrorCode::kUnsupported || code == ErrorCode::kBusy;
          auto l = state_->launched.find(a.vm);
          if (never_ran && l != state_->launched.end() && l->second == a.generation) state_->launched.erase(l);
          return;
        }
        Event("promoted", a.vm,
              "checkpoint " + std::to_string(r->epoch) + ", " + std::to_string(r->promote_ms) + " ms",
              {{"to", self_.name}, {"promote_ms", r->promote_ms}, {"generation", a.generation}});
        if (metrics_) metrics_->OnFailover(a.vm);
      });
      break;
    case Action::kReplicate: {
      state_->protect_sent.erase(a.vm);
      protect_ms_.erase(a.vm);
      const HostConfig* to = config_.Host(a.host);
      Worker(a.vm, [this, a, &v, to] {
        Status st = executor_.Replicate(v, *to, a.generation);
        std::lock_guard lock(mu_);
        if (st.ok()) {
          Event("protected-by", a.vm, a.host);
        } else {
          Event("replicate-failed", a.vm, st.message());
          ReprotectFailed(a.vm, a.host, "replicate to " + a.host + ": " + st.message(), now_ms_);
        }
      });
      break;
    }
    case Action::kStopReplication:
      Worker(a.vm, [this, a] {
        Status st = executor_.StopReplication(a.vm, /*keep_standby=*/true);
        if (!st.ok()) {
          std::lock_guard lock(mu_);
          Event("error", a.vm, "replicate_stop: " + st.message());
        }
      });
      break;
    case Action::kSwitchStandby: {
      state_->protect_sent.erase(a.vm);
      protect_ms_.erase(a.vm);
      const HostConfig* to = config_.Host(a.host);
      Worker(a.vm, [this, a, &v, to] {
        // Make-before-break: the old standby keeps its replica and the output stays held
        // until the new standby acknowledges; if that fails, the held output is released by
        // the next decision (the owner is alive and quorate) and another host is tried.
        Status st = executor_.StopReplication(a.vm, /*keep_standby=*/true);
        if (st.ok()) st = executor_.Replicate(v, *to, a.generation);
        std::lock_guard lock(mu_);
        if (st.ok()) {
          Event("protected-by", a.vm, a.host + " (" + a.why + ")");
        } else {
          Event("switch-failed", a.vm, st.message());
          ReprotectFailed(a.vm, a.host, "switch to " + a.host + ": " + st.message(), now_ms_);
        }
      });
      break;
    }
    case Action::kHandover:
      Worker(a.vm, [this, a] {
        auto r = executor_.Handover(a.vm, a.generation);
        std::lock_guard lock(mu_);
        if (!r.ok()) {
          Event("handover-failed", a.vm, r.status().message());
          return;
        }
        Event("handed-over", a.vm,
              "to " + a.host + ", downtime " + std::to_string(r->downtime_ms) + " ms: " + a.why,
              {{"from", self_.name}, {"to", a.host}, {"downtime_ms", r->downtime_ms}, {"generation", a.generation}});
        if (metrics_) metrics_->OnMigrated(a.vm, r->downtime_ms);
        Send(ClusterState::ClaimMessage(a.vm, Claim{a.generation, a.host, "handover"}));
      });
      break;
    case Action::kReleaseOutput:
      if (Status st = executor_.ReleaseOutput(a.vm, a.generation); !st.ok()) {
        Event("error", a.vm, "release_output: " + st.message());
      } else {
        state_->output_released.insert(a.vm);
      }
      break;
    case Action::kFence:
      if (Status st = executor_.Fence(a.vm); !st.ok()) {
        Event("error", a.vm, "fence: " + st.message());
        fence_unanswered_ms_[a.vm] = now_ms_;
      } else {
        fence_unanswered_ms_.erase(a.vm);
        if (metrics_) metrics_->OnFence();
      }
      break;
    case Action::kUnfence:
      if (Status st = executor_.Unfence(a.vm); !st.ok()) Event("error", a.vm, "unfence: " + st.message());
      break;
    case Action::kKill:
      executor_.Kill(a.vm);  // its end comes back through Reap()
      break;
  }
}

}  // namespace ferry::ha
