// The VM host's replication requests on the primary: "replicate" starts a Replicator inside
// the VMM and answers once the guest is protected; "replicate_stop" ends it; "handover" is
// the planned switchover to the standby. The lifecycle's replicating phase follows the
// replicator (VmHost::SyncReplication).
#include <algorithm>
#include <cstdio>

#include "ferry/base/guard.h"
#include "ferry/vmhost/vm_host.h"
#include "status_json.h"

namespace ferry::vmhost {

using nlohmann::json;

void VmHost::StopReplication() {
  std::shared_ptr<replication::Replicator> rep;
  {
    std::lock_guard lock(mu_);
    rep = replicator_;
  }
  if (rep) rep->Stop();
}

json VmHost::Replicate(const ReplicateRequest& r) {
  hypervisor::Vm& v = *vm();
  replication::ReplicateOptions o;
  ApplyPeer(r.peer, &o);
  o.io_timeout_ms = r.io_timeout_ms;
  o.hold_output_on_failure = r.hold_on_failure;
  o.sync_bandwidth = r.sync_bandwidth;
  o.epochs.interval_ms = r.interval_ms;
  if (r.max_interval_ms) {
    o.epochs.max_interval_ms = r.max_interval_ms;
  } else {
    // Stretched epochs are silences on the standby's data streams: at most half the timeout
    // after which a standby (with the same io_timeout_ms) takes the primary for lost.
    o.epochs.max_interval_ms = std::min(o.epochs.max_interval_ms, r.io_timeout_ms / 2.0);
  }
  if (o.epochs.max_interval_ms < o.epochs.interval_ms) o.epochs.max_interval_ms = o.epochs.interval_ms;
  o.epochs.throttle = r.throttle;

  std::shared_ptr<replication::Replicator> previous;  // ended; out of replicator_ so SyncReplication sees only the new one
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kReplicate);
    if (!from.ok()) return ErrorReply(from.status());
    std::lock_guard lock(mu_);
    previous.swap(replicator_);
    replication_starting_ = true;  // until the replicator is in replicator_: replicate_stop and handover wait
  }
  o.generation = r.generation.value_or(generation());
  // Connecting may take the io timeout: not under control_mu_, so a fence is never delayed.
  // An exception (out of memory) must fail the request like any error: the flag and the phase
  // above are undone below, or replicate_stop and handover would answer busy forever.
  std::unique_ptr<replication::Replicator> started_rep;
  const ferry::Status started = Guarded("starting replication", [&]() -> ferry::Status {
    FERRY_ASSIGN_OR_RETURN(started_rep, replication::Replicator::Start(v, o));
    return ferry::Status::Ok();
  });
  if (!started.ok()) {
    std::lock_guard control(control_mu_);
    {
      std::lock_guard lock(mu_);
      replication_starting_ = false;
      // A previous replication that left the output held (keep_standby, or a failure under
      // HA) stays in the status, so the agent still sees the output held and can release it.
      if (previous && previous->status().output_held && !replicator_) replicator_ = std::move(previous);
    }
    (void)lifecycle_.End(Event::kReplicationEnded);
    return ErrorReply(started);
  }
  previous.reset();
  std::shared_ptr<replication::Replicator> rep = std::move(started_rep);
  {
    std::lock_guard control(control_mu_);
    std::lock_guard lock(mu_);
    replicator_ = rep;
    replication_starting_ = false;
  }
  if (ferry::Status st = rep->WaitProtected(r.wait_ms); !st.ok()) {
    SyncReplication();
    json e = ErrorReply(Status(st.code(), "replication to " + o.to + " did not protect the VM: " + st.message()));
    e["replication"] = ReplicationStatusJson(rep->status());
    return e;
  }
  return {{"ok", true}, {"replication", ReplicationStatusJson(rep->status())}};
}

// The phase stays replicating until the replicator has stopped (a checkpoint may be in
// flight: it pauses and resumes the guest and reads the dirty log), then follows it.
json VmHost::ReplicateStop(const ReplicateStopRequest& r) {
  std::shared_ptr<replication::Replicator> rep;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kReplicateStop);
    if (!from.ok()) return ErrorReply(from.status());
    std::lock_guard lock(mu_);
    if (replication_starting_) {
      return ErrorReply(Status(ErrorCode::kBusy, "replication is still connecting to its standby: stop it once "
                                                 "\"replicate\" has answered"));
    }
    rep = replicator_;
  }
  if (!rep) return ErrorReply(Refused("this VM is not being replicated"));
  rep->Stop(r.keep_standby);  // after the checkpoint in flight: outside the locks
  SyncReplication();
  return {{"ok", true}, {"replication", ReplicationStatusJson(rep->status())}};
}

// A handover that did not happen (control_mu_ held): back to replicating while the
// replicator runs (or is still connecting), else on to running, unprotected.
void VmHost::EndHandoverNotDone() {
  EndHeld(Event::kDone);
  bool replicating;
  {
    std::lock_guard lock(mu_);
    replicating = replication_starting_ || (replicator_ && replicator_->running());
  }
  const Phase p = lifecycle_.phase();
  if (!replicating && (p == Phase::kReplicating || p == Phase::kFenced)) EndHeld(Event::kReplicationEnded);
}

json VmHost::Handover(const HandoverRequest& r) {
  hypervisor::Vm& v = *vm();
  std::shared_ptr<replication::Replicator> rep;
  uint64_t target;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kHandover);
    if (!from.ok()) return ErrorReply(from.status());
    target = r.generation.value_or(generation() + 1);
    std::unique_lock lock(mu_);
    rep = replicator_;
    const uint64_t generation = generation_;
    const bool starting = replication_starting_;
    if (target <= generation || starting || !rep || !rep->running()) {
      lock.unlock();
      EndHandoverNotDone();
      if (target <= generation) {
        return ErrorReply(InvalidArgument("a handover must raise the generation (it is " + std::to_string(generation) + ")"));
      }
      if (starting) return ErrorReply(Status(ErrorCode::kBusy, "replication is still connecting to its standby"));
      return ErrorReply(Refused("replication has ended: there is no standby to hand the VM to"));
    }
  }
  auto h = rep->Handover(target);
  std::lock_guard control(control_mu_);
  if (!h.ok()) {
    if (h.status().code() == ErrorCode::kIndeterminate) {
      (void)v.Seal("a handover's commit went unanswered");
      (void)lifecycle_.End(Event::kCommitUnknown);
    } else {
      EndHandoverNotDone();  // refused (no checkpoint yet): still replicating; failed: runs on unprotected
    }
    return ErrorReply(h.status());
  }
  (void)v.Seal("handed over to the standby");
  (void)lifecycle_.End(Event::kCommitted);
  std::fprintf(stderr, "ferry: handed over to the standby at generation %llu (downtime %.1f ms); this VMM stops\n",
               static_cast<unsigned long long>(h->generation), h->downtime_ms);
  v.Stop();
  return {{"ok", true}, {"epoch", h->epoch}, {"generation", h->generation}, {"downtime_ms", h->downtime_ms},
          {"final_ship_ms", h->final_ship_ms}};
}

}  // namespace ferry::vmhost
