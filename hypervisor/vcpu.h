// Vcpu: one KVM vCPU and the dedicated thread blocked in KVM_RUN for it (STYLE.md rule 6).
//
// The thread runs RunLoop(): enter the guest, dispatch the exit in one switch, repeat. It
// asks its VcpuHost (the Vm) before every entry whether to park, so pause, snapshot and stop
// are coordinated by the Vm. Kick() interrupts KVM_RUN from any thread (a signal whose
// handler sets immediate_exit). State save/restore is only legal while the thread is parked
// or not started; that is the Vm's duty.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vcpu_state.h"
#include "kvm_sys.h"

namespace ferry::hypervisor {

class VcpuHost {
 public:
  enum class Action { kContinue, kStop };
  virtual ~VcpuHost() = default;
  // A hypercall `nr` from vCPU `index`; the result goes into its hypercall block.
  virtual Action OnHypercall(uint32_t index, uint32_t nr) = 0;
  // The guest did something fatal (triple fault, bad exit); the VM stops.
  virtual void OnCrash(uint32_t index, const std::string& reason) = 0;
  // Cheap check before each guest entry: is a pause or stop pending?
  virtual bool ParkPending() const = 0;
  // Blocks while paused. Returns false when the VM is stopping (the thread then exits).
  virtual bool Park(uint32_t index) = 0;
  // After a kick: holds the vCPU off the CPU for its throttle share, if it has one.
  virtual void Throttle(uint32_t index) = 0;
  // KVM_EXIT_DIRTY_RING_FULL: make room so the vCPU can run again. False is fatal.
  virtual bool OnDirtyRingFull(uint32_t index) = 0;
};

class Vcpu {
 public:
  static Result<std::unique_ptr<Vcpu>> Create(int vm_fd, uint32_t index, size_t run_size,
                                              const std::vector<uint32_t>& msr_indices, VcpuHost* host);
  ~Vcpu();

  uint32_t index() const { return index_; }
  int fd() const { return handles_.fd.get(); }

  Status SetRegisters(const kvm_regs& regs, const kvm_sregs& sregs);
  Result<VcpuState> SaveState() const;
  Status RestoreState(const VcpuState& state);

  void StartThread();
  void Kick();
  void Join();

 private:
  Vcpu(uint32_t index, sys::VcpuHandles handles, size_t run_size, std::vector<uint32_t> msrs, VcpuHost* host)
      : index_(index), handles_(std::move(handles)), run_size_(run_size), msr_indices_(std::move(msrs)), host_(host) {}
  void RunLoop();
  // Handles one KVM exit; returns false when the thread should exit.
  bool DispatchExit();
  std::string DescribeRip() const;

  const uint32_t index_;
  sys::VcpuHandles handles_;
  const size_t run_size_;
  const std::vector<uint32_t> msr_indices_;
  VcpuHost* const host_;
  std::thread thread_;
};

}  // namespace ferry::hypervisor
