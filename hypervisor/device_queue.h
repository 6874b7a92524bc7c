// DeviceQueue: the device's side of one descriptor ring in guest memory (guest_abi.h).
//
// The ring lives in guest RAM and the guest may scribble on it at any time, so nothing read
// from it is trusted: placement is validated at setup, `avail` is checked against the ring
// size, and each descriptor is copied out once before the device looks at it. A queue whose
// `avail` runs more than `entries` ahead is broken: it stays ignored until set up again.
// Completions write the descriptor's status (and length), then publish `used` with a release
// store; every write is marked dirty for migration. Not thread-safe: its device's lock guards it.
#pragma once

#include <cstdint>
#include <optional>

#include "ferry/hypervisor/device_state.h"
#include "ferry/hypervisor/guest_abi.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

class DeviceQueue {
 public:
  explicit DeviceQueue(GuestMemory& memory) : memory_(memory) {}

  // FERRY_HC_QUEUE_SETUP: attaches the ring at `gpa` and starts at the guest's current
  // `used`. Returns FERRY_E_OK or FERRY_E_INVAL (the queue is then unset).
  uint32_t Setup(uint64_t gpa, uint64_t entries);
  bool ready() const { return state_.ring_gpa != 0 && !state_.broken; }
  bool broken() const { return state_.broken; }
  uint32_t entries() const { return state_.entries; }

  // The next descriptor to complete (a private copy), or nullopt when the guest has posted
  // nothing more. Marks the queue broken if `avail` is out of range.
  std::optional<ferry_desc> Peek();
  // Completes the descriptor Peek() returned: status, and for received frames its length.
  void Complete(uint16_t status, std::optional<uint32_t> len = std::nullopt);

  // True when a descriptor's buffer [addr, addr+len) is guest RAM the device may touch.
  bool BufferOk(uint64_t addr, uint64_t len) const;

  QueueState Save() const { return state_; }
  // Re-attaches a saved queue (after restore or migration); validates placement again.
  Status Restore(const QueueState& saved);

 private:
  uint8_t* RingBase() const { return memory_.host() + state_.ring_gpa; }
  GuestMemory& memory_;
  QueueState state_;
};

}  // namespace ferry::hypervisor
