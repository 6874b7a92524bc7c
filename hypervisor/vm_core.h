// VmCore: the private engine behind Vm. Owns the KVM handles, the vCPUs, the devices and
// the run-state machine, and is the VcpuHost that vCPU threads call back into.
//
// Locking: mu_ guards every field marked "guarded by mu_"; cv_ signals any change of them.
// park_pending_ mirrors (pause_requested_ || stopping_) for the vCPUs' lock-free check.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "block_device.h"
#include "console.h"
#include "ferry/hypervisor/kvm_dirty_log.h"
#include "ferry/hypervisor/vm.h"
#include "kvm_sys.h"
#include "net_device.h"
#include "pvclock.h"
#include "vcpu.h"

namespace ferry::hypervisor {

class VmCore : public VcpuHost {
 public:
  VmCore(Vm* vm, ConsoleSink sink);
  ~VmCore() override;

  // Creates the KVM VM, registers memory, creates vCPUs, opens the PV devices' backends.
  Status Init();
  // Re-attaches the devices to their saved state (restore, migration); before Start().
  Status RestoreDevices(const VmState& state);
  DeviceReport Devices() const;
  NetDevice* net() { return net_.get(); }
  BlockDevice* block() { return block_.get(); }
  Vcpu& vcpu(size_t i) { return *vcpus_[i]; }
  KvmDirtyLog& dirty_log() { return *dirty_log_; }
  Status SetThrottle(int index, uint32_t percent);
  uint32_t throttle(uint32_t index) const;
  PvClock& clock() { return clock_; }
  Console& console() { return console_; }

  Status Start();
  Result<PauseStats> Pause();
  Status Resume();
  Result<VmState> SaveState();
  void Stop();
  uint64_t BumpEvent(bool verify);  // returns the bumped counter's new value
  void RaiseIrq();                  // a device completed descriptors: wake waiting vCPUs
  VmExit WaitForExit();
  bool WaitForExitFor(uint64_t timeout_ms, VmExit* exit);
  RunState state() const;
  GuestReport LastReport() const;
  // Records a guest status report (from the hypercall, or from a saved state on restore).
  void StoreReport(std::string text);

  // VcpuHost
  Action OnHypercall(uint32_t index, uint32_t nr) override;
  void OnCrash(uint32_t index, const std::string& reason) override;
  bool ParkPending() const override { return park_pending_.load(std::memory_order_acquire); }
  bool Park(uint32_t index) override;
  void Throttle(uint32_t index) override;
  bool OnDirtyRingFull(uint32_t index) override;

 private:
  void FinishLocked(RunState state, int exit_code, const std::string& reason);
  void UpdateParkPendingLocked();
  void KickAll();
  uint64_t WaitForEvent(uint32_t index, uint64_t timeout_ns, uint64_t seen_events);

  void JoinAll();
  Status OpenDevices();
  void PublishDeviceInfo();
  uint64_t QueueHypercall(uint32_t nr, const uint64_t* args);
  void QuiesceDevices();
  void ThrottleLoop();

  Vm* const vm_;
  sys::KvmHandles kvm_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::unique_ptr<KvmDirtyLog> dirty_log_;
  // Per-vCPU throttle percentages, written by SetThrottle, read by the vCPU threads.
  std::unique_ptr<std::atomic<uint32_t>[]> throttle_pct_;
  std::thread throttle_thread_;          // kicks throttled vCPUs every period; started on demand
  Console console_;
  PvClock clock_;
  std::unique_ptr<BlockDevice> block_;  // null: no disk
  std::unique_ptr<NetDevice> net_;      // null: no NIC
  bool announce_on_start_ = false;      // restored with a known guest address

  mutable std::mutex mu_;
  std::condition_variable cv_;
  RunState state_ = RunState::kCreated;  // guarded by mu_
  bool pause_requested_ = false;         // guarded by mu_
  bool stopping_ = false;                // guarded by mu_
  uint32_t parked_ = 0;                  // guarded by mu_
  uint32_t threads_alive_ = 0;           // guarded by mu_
  VmExit exit_;                          // guarded by mu_
  GuestReport report_;                   // guarded by mu_
  std::atomic<bool> park_pending_{false};
  std::mutex join_mu_;                   // serializes joining the vCPU threads
};

}  // namespace ferry::hypervisor
