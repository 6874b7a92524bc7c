// The VM host's requests from the HA agent (ha-manager/): fence and unfence, release of
// output that replication held back, the generation (fencing token), and promotion of a
// standby's replica.
#include <cstdio>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/vmhost/vm_host.h"

namespace ferry::vmhost {

using nlohmann::json;

// The vCPUs stop and stay stopped: the VM is sealed, so neither an operator's resume nor a
// replicator's checkpoint can run it. What replication holds stays held (the agent asked for
// hold-on-failure), so nothing of an unacknowledged epoch leaves either.
json VmHost::Fence() {
  std::lock_guard control(control_mu_);
  auto from = lifecycle_.Begin(Event::kFence);
  if (!from.ok()) return ErrorReply(from.status());
  auto sealed = vm()->Seal("fenced by the HA manager");
  {
    std::lock_guard lock(mu_);
    if (!fenced_at_ms_) fenced_at_ms_ = RealtimeMs();
  }
  if (!sealed.ok()) FERRY_LOG_WARN("fence: %s", sealed.status().message().c_str());
  std::fprintf(stderr, "ferry: fenced (generation %llu): the guest is paused and sends nothing\n",
               static_cast<unsigned long long>(generation()));
  return {{"ok", true}, {"ha", HaJson()}};
}

json VmHost::Unfence() {
  // The lease is read under control_mu_: a watchdog that finds it run out in between fences
  // after this unfence, never before it (and is then undone by it).
  std::lock_guard control(control_mu_);
  {
    std::lock_guard lock(lease_mu_);
    if (lease_expired_) return ErrorReply(Refused("unfence is refused: the HA agent's lease ran out (renew it first)"));
  }
  const bool was_fenced = lifecycle_.fenced();
  auto from = lifecycle_.Begin(Event::kUnfence);
  if (!from.ok()) return ErrorReply(from.status());
  if (!was_fenced) return {{"ok", true}, {"ha", HaJson()}};
  hypervisor::Vm& v = *vm();
  // A source whose commit went unanswered stays sealed: only resume --force lifts that.
  if (lifecycle_.phase() != Phase::kCommitUnknown) v.Unseal();
  {
    std::lock_guard lock(mu_);
    fenced_at_ms_ = 0;
  }
  // Back where the fence found it: running (or replicating) resumes; paused stays paused; an
  // operation still holding the VM resumes it itself when it ends.
  if (GuestRuns(lifecycle_.phase())) {
    if (ferry::Status st = v.Resume(); !st.ok()) return ErrorReply(st.Annotate("unfence"));
  }
  return {{"ok", true}, {"ha", HaJson()}};
}

json VmHost::ReleaseOutput() {
  std::lock_guard control(control_mu_);
  auto from = lifecycle_.Begin(Event::kReleaseOutput);
  if (!from.ok()) return ErrorReply(from.status());
  std::shared_ptr<replication::Replicator> r;
  {
    std::lock_guard lock(mu_);
    if (replicator_ && replicator_->running()) {
      return ErrorReply(Refused("replication is running: its acknowledgements release the output"));
    }
    r = replicator_;
  }
  // Through the replicator, so its status stops saying the output is held: an agent reading
  // output_held true would release it again on every tick and never re-protect.
  if (r) r->ReleaseHeldOutput();
  vm()->StopOutputBuffering();
  return {{"ok", true}};
}

json VmHost::SetGeneration(const SetGenerationRequest& r) {
  std::lock_guard control(control_mu_);
  auto from = lifecycle_.Begin(Event::kSetGeneration);
  if (!from.ok()) return ErrorReply(from.status());
  {
    std::lock_guard lock(mu_);
    if (r.generation < generation_) {
      return ErrorReply(InvalidArgument("the generation may only grow (it is " + std::to_string(generation_) + ")"));
    }
    generation_ = r.generation;
  }
  return {{"ok", true}, {"ha", HaJson()}};
}

json VmHost::Promote(const PromoteRequest& r) {
  replication::Standby* standby;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kPromote);
    if (!from.ok()) return ErrorReply(from.status());
    std::lock_guard lock(mu_);
    standby = standby_;
  }
  if (!standby) {
    std::lock_guard control(control_mu_);
    (void)lifecycle_.End(Event::kPromoteFailed);
    return ErrorReply(Refused("no replica here to promote"));
  }
  replication::PromoteStats stats;
  auto vm = standby->Promote(r.force, r.generation, &stats);
  if (!vm.ok()) {
    std::lock_guard control(control_mu_);
    (void)lifecycle_.End(Event::kPromoteFailed);
    return ErrorReply(vm.status());
  }
  std::fprintf(stderr, "ferry standby: promoted: checkpoint %llu (%.1f ms old) running %.2f ms after the request\n",
               static_cast<unsigned long long>(stats.epoch), stats.since_commit_ms, stats.promote_ms);
  {
    std::lock_guard lock(mu_);
    vm_ = std::move(vm).value();
    generation_ = stats.generation;
    cv_.notify_all();
  }
  {
    std::lock_guard control(control_mu_);
    (void)lifecycle_.End(Event::kPromoted);
  }
  return {{"ok", true}, {"epoch", stats.epoch}, {"generation", stats.generation},
          {"since_commit_ms", stats.since_commit_ms}, {"promote_ms", stats.promote_ms}};
}

}  // namespace ferry::vmhost
