#include "device_queue.h"

#include <atomic>
#include <cstring>

#include "ferry/base/log.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kDescOffset = sizeof(ferry_ring);

bool PlacementOk(const GuestMemory& memory, uint64_t gpa, uint64_t entries) {
  if (entries == 0 || entries > FERRY_RING_MAX_ENTRIES || (entries & (entries - 1)) != 0) return false;
  if (gpa < FERRY_GPA_IMAGE_MIN || gpa % 64 != 0) return false;
  return memory.Contains(gpa, FERRY_RING_BYTES(entries));
}

}  // namespace

uint32_t DeviceQueue::Setup(uint64_t gpa, uint64_t entries) {
  state_ = QueueState{};
  if (!PlacementOk(memory_, gpa, entries)) return FERRY_E_INVAL;
  state_.ring_gpa = gpa;
  state_.entries = static_cast<uint32_t>(entries);
  // Start where the guest's ring says the device is, so a re-setup resumes cleanly.
  auto* ring = reinterpret_cast<ferry_ring*>(RingBase());
  state_.next = std::atomic_ref<uint32_t>(ring->used).load(std::memory_order_acquire);
  return FERRY_E_OK;
}

std::optional<ferry_desc> DeviceQueue::Peek() {
  if (!ready()) return std::nullopt;
  auto* ring = reinterpret_cast<ferry_ring*>(RingBase());
  uint32_t avail = std::atomic_ref<uint32_t>(ring->avail).load(std::memory_order_acquire);
  uint32_t pending = avail - state_.next;
  if (pending == 0) return std::nullopt;
  if (pending > state_.entries) {
    // The guest can break a queue, set it up again and break it at hypercall speed: this line
    // is rate-limited, or it filled the VMM's log (and under HA the host's disk) at will.
    static LogLimiter limiter(10, 20);
    if (uint64_t dropped = 0; limiter.Allow(&dropped)) {
      FERRY_LOG_ERROR("device queue at 0x%llx: avail %u runs %u ahead of the device (ring of %u); queue disabled"
                      " (%llu more such lines dropped before this one)",
                      static_cast<unsigned long long>(state_.ring_gpa), avail, pending, state_.entries,
                      static_cast<unsigned long long>(dropped));
    }
    state_.broken = true;
    return std::nullopt;
  }
  ferry_desc d;
  uint64_t slot = kDescOffset + uint64_t{state_.next % state_.entries} * sizeof(ferry_desc);
  // SAFETY: the ring was bounds-checked at setup; the copy is what the device acts on.
  std::memcpy(&d, RingBase() + slot, sizeof d);
  return d;
}

void DeviceQueue::Complete(uint16_t status, std::optional<uint32_t> len) {
  uint64_t slot = kDescOffset + uint64_t{state_.next % state_.entries} * sizeof(ferry_desc);
  auto* desc = reinterpret_cast<ferry_desc*>(RingBase() + slot);
  desc->status = status;
  if (len) desc->len = *len;
  memory_.MarkDirty(state_.ring_gpa + slot, sizeof(ferry_desc));
  ++state_.next;
  auto* ring = reinterpret_cast<ferry_ring*>(RingBase());
  std::atomic_ref<uint32_t>(ring->used).store(state_.next, std::memory_order_release);
  memory_.MarkDirty(state_.ring_gpa, sizeof(ferry_ring));
}

bool DeviceQueue::BufferOk(uint64_t addr, uint64_t len) const {
  return addr >= FERRY_GPA_IMAGE_MIN && memory_.Contains(addr, len);
}

Status DeviceQueue::Restore(const QueueState& saved) {
  if (saved.ring_gpa == 0) {
    state_ = QueueState{};
    return Status::Ok();
  }
  if (!PlacementOk(memory_, saved.ring_gpa, saved.entries)) return Corrupt("saved device ring lies outside guest memory");
  state_ = saved;
  return Status::Ok();
}

}  // namespace ferry::hypervisor
