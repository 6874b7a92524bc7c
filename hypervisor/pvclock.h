// The paravirtual clock: the VMM owns guest time. It measures the guest's TSC against the
// host's (guest rdtsc may or may not be offset from ours), then publishes base, scale and
// offset in the shared page so the guest computes nanoseconds without exiting.
// Publish() runs while no vCPU is running (boot, restore); GuestNs() is thread-safe after.
#pragma once

#include <cstdint>

#include "ferry/base/status.h"
#include "ferry/hypervisor/device_state.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

class PvClock {
 public:
  // Calibrates against vCPU `vcpu_fd` and makes guest time equal `guest_ns` now.
  Status Publish(GuestMemory& memory, int vcpu_fd, uint64_t guest_ns);
  uint64_t GuestNs() const;
  ClockState Save() const;
  // Guest time to resume from: saved time plus the real time that passed (never negative).
  static uint64_t ResumeNs(const ClockState& saved);
  uint64_t tsc_hz() const { return tsc_hz_; }

 private:
  uint64_t tsc_hz_ = 0;
  int64_t guest_tsc_offset_ = 0;  // guest TSC - host TSC
  uint64_t tsc_base_ = 0;         // in guest TSC units
  uint64_t ns_base_ = 0;
  uint64_t tsc_mul_ = 0;          // ns per tick << 32
};

}  // namespace ferry::hypervisor
