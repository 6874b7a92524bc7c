#include "ferry/vmhost/vm_host.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "status_json.h"

namespace ferry::vmhost {

using nlohmann::json;

VmHost::VmHost(Phase initial, std::string api_path) : api_path_(std::move(api_path)), lifecycle_(initial) {}

VmHost::~VmHost() {
  {
    std::lock_guard lock(lease_mu_);
    lease_stop_ = true;
    lease_cv_.notify_all();
  }
  if (lease_thread_.joinable()) lease_thread_.join();
  StopReplication();
}

void VmHost::SetStandby(replication::Standby* standby) {
  std::lock_guard lock(mu_);
  standby_ = standby;
}

void VmHost::SetCancel(std::function<void()> cancel) {
  std::lock_guard lock(mu_);
  cancel_ = std::move(cancel);
}

void VmHost::Attach(std::unique_ptr<hypervisor::Vm> vm, uint64_t generation, bool arrived) {
  {
    std::lock_guard lock(mu_);
    vm_ = std::move(vm);
    generation_ = generation;
  }
  if (arrived) {
    std::lock_guard control(control_mu_);
    const Phase was = lifecycle_.phase();
    if (ferry::Status st = lifecycle_.End(Event::kArrived); !st.ok()) {
      FERRY_LOG_ERROR("the VM arrived in phase %s: %s", PhaseName(was), st.message().c_str());
    } else if (was == Phase::kStopped) {
      std::fprintf(stderr, "ferry: a stop came as the VM arrived; its source has stopped for good, so it runs here "
                   "(stop it again to stop it)\n");
    }
  }
  Notify();
}

void VmHost::AttachUnresolved(std::unique_ptr<hypervisor::Vm> vm, uint64_t generation) {
  {
    std::lock_guard lock(mu_);
    vm_ = std::move(vm);
    generation_ = generation;
  }
  {
    std::lock_guard control(control_mu_);
    if (ferry::Status st = lifecycle_.End(Event::kCommitUnknown); !st.ok()) FERRY_LOG_WARN("%s", st.message().c_str());
  }
  Notify();
}

void VmHost::Notify() {
  std::lock_guard lock(mu_);
  cv_.notify_all();
}

hypervisor::Vm* VmHost::vm() const {
  std::lock_guard lock(mu_);
  return vm_.get();
}

uint64_t VmHost::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

DecodeLimits VmHost::Limits() const {
  DecodeLimits l;
  std::lock_guard lock(mu_);
  if (vm_) {
    l.guest_mem_bytes = vm_->config().mem_bytes;
    l.vcpus = vm_->config().vcpus;
  }
  l.host_mem_available = HostMemAvailable();
  l.generation = generation_;
  return l;
}

// The replicator ends on its own (standby lost, link cut): the phase follows. Read and acted
// on under control_mu_, so a "replicate" admitted meanwhile is not taken for the one that ended.
void VmHost::SyncReplication() {
  std::lock_guard control(control_mu_);
  {
    std::lock_guard lock(mu_);
    if (!replicator_ || replication_starting_ || replicator_->running()) return;
  }
  Phase p = lifecycle_.phase();
  if (p == Phase::kReplicating || p == Phase::kFenced) (void)lifecycle_.End(Event::kReplicationEnded);
}

void VmHost::EndHeld(Event outcome) {
  if (ferry::Status st = lifecycle_.End(outcome); !st.ok()) {
    FERRY_LOG_ERROR("%s", st.message().c_str());
    return;
  }
  // Running only: back in replicating, the replicator may have the guest paused for a
  // checkpoint right now, and resuming it then would tear that checkpoint.
  hypervisor::Vm* v = vm();
  if (v && lifecycle_.phase() == Phase::kRunning && !v->sealed() && v->state() == hypervisor::RunState::kPaused) {
    if (ferry::Status st = v->Resume(); !st.ok()) FERRY_LOG_ERROR("resume after %s: %s", EventName(outcome), st.message().c_str());
  }
}

json VmHost::Handle(const json& request, const ApiEmit& emit) {
  try {
    SyncReplication();
    auto decoded = DecodeRequest(request, Limits());
    if (!decoded.ok()) return ErrorReply(decoded.status());
    return Dispatch(*decoded, emit);
  } catch (const std::exception& e) {
    // The last line of defence: no request may end the VMM.
    FERRY_LOG_ERROR("API request failed: %s", e.what());
    return ErrorReply(Internal(std::string("internal error: ") + e.what()));
  } catch (...) {
    return ErrorReply(Internal("internal error"));
  }
}

json VmHost::Dispatch(const Request& q, const ApiEmit& emit) {
  const Phase now = lifecycle_.phase();
  // Requests that need a VM fail clearly where there is none yet.
  if (!vm() && q.event != Event::kStatus && q.event != Event::kStop && q.event != Event::kPromote &&
      q.event != Event::kLease) {
    return ErrorReply(Refused(RefusalReason(now, q.event)));
  }
  return std::visit(
      [&](const auto& body) -> json {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, StatusRequest>) return StatusReply();
        else if constexpr (std::is_same_v<T, PauseRequest>) return Pause();
        else if constexpr (std::is_same_v<T, ResumeRequest>) return Resume(body.force);
        else if constexpr (std::is_same_v<T, StopRequest>) return Stop(body.force);
        else if constexpr (std::is_same_v<T, SnapshotRequest>) return Snapshot(body);
        else if constexpr (std::is_same_v<T, VerifyRequest>) return Verify(body);
        else if constexpr (std::is_same_v<T, DirtyRateRequest>) return DirtyRate(body);
        else if constexpr (std::is_same_v<T, ThrottleRequest>) return Throttle(body);
        else if constexpr (std::is_same_v<T, MigrateRequest>) return Migrate(body, emit);
        else if constexpr (std::is_same_v<T, ReplicateRequest>) return Replicate(body);
        else if constexpr (std::is_same_v<T, ReplicateStopRequest>) return ReplicateStop(body);
        else if constexpr (std::is_same_v<T, HandoverRequest>) return Handover(body);
        else if constexpr (std::is_same_v<T, FenceRequest>) return Fence();
        else if constexpr (std::is_same_v<T, UnfenceRequest>) return Unfence();
        else if constexpr (std::is_same_v<T, LeaseRequest>) {
          Lease(body.ttl_ms);
          return json{{"ok", true}, {"ha", HaJson()}};
        }
        else if constexpr (std::is_same_v<T, ReleaseOutputRequest>) return ReleaseOutput();
        else if constexpr (std::is_same_v<T, SetGenerationRequest>) return SetGeneration(body);
        else return Promote(body);
      },
      q.body);
}

json VmHost::HaJson() const {
  json lease = LeaseJson();  // lease_mu_ is never taken under mu_
  std::lock_guard lock(mu_);
  return {{"generation", generation_}, {"fenced", lifecycle_.fenced()}, {"fenced_at_ms", fenced_at_ms_}, {"lease", lease}};
}

json VmHost::ReplicationJson() const {
  std::lock_guard lock(mu_);
  if (replicator_) return ReplicationStatusJson(replicator_->status());
  if (standby_ && !vm_) return StandbyStatusJson(standby_->status());
  return nullptr;
}

json VmHost::StatusReply() {
  const Phase p = lifecycle_.phase();
  hypervisor::Vm* v = vm();
  json out = {{"ok", true}, {"state", PhaseName(p)}, {"pid", getpid()}, {"replication", ReplicationJson()},
              {"ha", HaJson()}};
  if (v) VmStatusJson(*v, &out);
  return out;
}

Result<hypervisor::VmExit> VmHost::Run(bool verify_on_start) {
  hypervisor::Vm* v = vm();
  if (!v) return Internal("no VM to run");
  if (verify_on_start) v->RequestVerify();
  if (lifecycle_.phase() == Phase::kBooting) {
    std::lock_guard control(control_mu_);
    if (ferry::Status st = v->Start(); !st.ok()) return st.Annotate("cannot start the VM");
    (void)lifecycle_.End(Event::kStarted);
  }
  hypervisor::VmExit exit = v->WaitForExit();
  StopReplication();
  switch (exit.state) {
    case hypervisor::RunState::kShutdown: lifecycle_.Exited(Phase::kShutdown); break;
    case hypervisor::RunState::kCrashed: lifecycle_.Exited(Phase::kCrashed); break;
    default: lifecycle_.Exited(Phase::kStopped); break;
  }
  return exit;
}

bool VmHost::WaitForVm(const std::function<bool()>& give_up) {
  std::unique_lock lock(mu_);
  for (;;) {
    if (vm_) return true;
    if (shutdown_) return false;
    lock.unlock();
    bool stop = give_up();
    lock.lock();
    if (vm_) return true;
    if (stop) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
}

void VmHost::Shutdown() {
  std::function<void()> cancel;
  hypervisor::Vm* v;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    v = vm_.get();
    cancel = cancel_;
    cv_.notify_all();
  }
  if (v) {
    FERRY_LOG_WARN("stopping the VM");
    v->Stop();
    return;
  }
  {
    std::lock_guard control(control_mu_);
    (void)lifecycle_.Begin(Event::kStop);  // incoming or standby: stopped
  }
  if (cancel) cancel();
}

}  // namespace ferry::vmhost
