// VmHost: the one owner of a VM in a VMM process (`ferry run`, `restore`, `incoming`,
// `standby`): the VM itself once there is one, its lifecycle (lifecycle.h), its generation
// (HA fencing token), the fence, the replicator that protects it and the standby replica
// that may become it. Every API request goes through Handle(): decoded once into a typed
// request (requests.h), admitted or refused by the lifecycle, then run. Operations that need
// the VM (snapshot, migration, handover, promotion, dirty-rate) hold it through their phase;
// a migrated or handed-over source is sealed and stopped, and never runs again.
//
// Thread-safety: Handle() from any number of API threads; Attach(), Run() and the rest from
// the process's main thread as documented. control_mu_ serializes every change of the VM's
// run state with the lifecycle's phase, so the two never disagree.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/hypervisor/vm.h"
#include "ferry/replication/replicator.h"
#include "ferry/replication/standby.h"
#include "ferry/vmhost/api_server.h"
#include "ferry/vmhost/lifecycle.h"
#include "ferry/vmhost/requests.h"

namespace ferry::vmhost {

class VmHost {
 public:
  // `initial`: kBooting (a VM will be attached before Run), kIncoming or kStandby.
  explicit VmHost(Phase initial, std::string api_path = "");
  ~VmHost();
  VmHost(const VmHost&) = delete;
  VmHost& operator=(const VmHost&) = delete;

  // A standby host serves this replica's status and promotion until a VM runs (not owned).
  void SetStandby(replication::Standby* standby);
  // Called (once, from an API thread) when an operator stops a host that has no VM yet.
  void SetCancel(std::function<void()> cancel);
  // Gives the host its VM. `arrived`: it already runs (a migration or handover brought it).
  void Attach(std::unique_ptr<hypervisor::Vm> vm, uint64_t generation, bool arrived);
  // Gives the host a post-copy destination's VM whose source never confirmed its end: sealed,
  // paused, its output and disk writes held (commit-unknown; `resume --force` releases them).
  void AttachUnresolved(std::unique_ptr<hypervisor::Vm> vm, uint64_t generation);

  // The JSON API: never throws, always answers with an object carrying "ok".
  nlohmann::json Handle(const nlohmann::json& request, const ApiEmit& emit);

  // Starts the attached VM (unless it arrived running) and blocks until it ends.
  Result<hypervisor::VmExit> Run(bool verify_on_start);
  // Blocks until a VM is attached (true) or `give_up` says so (false); re-checks every 50 ms
  // and whenever something changes.
  bool WaitForVm(const std::function<bool()>& give_up);
  // A signal: stops the VM, or cancels a host that has none.
  void Shutdown();
  // The watchdog lease (the HA agent's): unless renewed within ttl_ms, the VM is fenced (a
  // VM that arrives after it expired too) and unfence is refused until it is renewed. So a
  // VMM whose agent crashed, hangs or was stopped sends nothing after a bounded time, with
  // no hardware watchdog. 0 ends the lease. Call after the SignalWatcher exists.
  void Lease(uint64_t ttl_ms);

  Phase phase() const { return lifecycle_.phase(); }
  uint64_t generation() const;
  hypervisor::Vm* vm() const;

 private:
  nlohmann::json Dispatch(const Request& request, const ApiEmit& emit);
  nlohmann::json StatusReply();
  nlohmann::json HaJson() const;
  nlohmann::json ReplicationJson() const;
  DecodeLimits Limits() const;
  void SyncReplication();
  // Records a holding operation's outcome (control_mu_ held); back in running, the guest runs
  // (a fence and unfence while it held the VM left the vCPUs paused).
  void EndHeld(Event outcome);
  void Notify();

  // vm_ops.cc
  nlohmann::json Pause();
  nlohmann::json Resume(bool force);
  nlohmann::json Stop(bool force);
  nlohmann::json Snapshot(const SnapshotRequest& r);
  nlohmann::json Verify(const VerifyRequest& r);
  nlohmann::json DirtyRate(const DirtyRateRequest& r);
  nlohmann::json Throttle(const ThrottleRequest& r);
  // vm_ha.cc
  nlohmann::json Fence();
  nlohmann::json Unfence();
  nlohmann::json LeaseJson() const;
  void LeaseWatchdog();
  nlohmann::json ReleaseOutput();
  nlohmann::json SetGeneration(const SetGenerationRequest& r);
  nlohmann::json Promote(const PromoteRequest& r);
  // vm_migrate.cc
  nlohmann::json Migrate(const MigrateRequest& r, const ApiEmit& emit);
  // vm_replicate.cc
  nlohmann::json Replicate(const ReplicateRequest& r);
  nlohmann::json ReplicateStop(const ReplicateStopRequest& r);
  nlohmann::json Handover(const HandoverRequest& r);
  void EndHandoverNotDone();
  void StopReplication();

  const std::string api_path_;
  Lifecycle lifecycle_;
  mutable std::mutex control_mu_;  // held while a run-state change and its phase change happen

  mutable std::mutex mu_;  // guards the members below
  std::condition_variable cv_;
  std::unique_ptr<hypervisor::Vm> vm_;  // set once by Attach, kept until the host goes
  uint64_t generation_ = 0;
  uint64_t fenced_at_ms_ = 0;
  replication::Standby* standby_ = nullptr;
  std::function<void()> cancel_;
  // Kept after it ends, for status; shared so a request may use it outside mu_ while a later
  // "replicate" installs another.
  std::shared_ptr<replication::Replicator> replicator_;
  bool replication_starting_ = false;  // "replicate" is connecting: its replicator is not in replicator_ yet
  bool shutdown_ = false;

  // The lease, guarded by lease_mu_ (taken after control_mu_, never with mu_ held).
  mutable std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  uint64_t lease_ttl_ms_ = 0;       // 0: no lease
  uint64_t lease_deadline_ns_ = 0;  // monotonic
  bool lease_expired_ = false;
  bool lease_stop_ = false;
  std::thread lease_thread_;        // started by the first Lease(), joined by the destructor
};

}  // namespace ferry::vmhost
