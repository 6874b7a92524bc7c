// BlockDevice: the paravirtual disk. One request queue in guest memory (guest_abi.h), backed
// by a raw image file on the host.
//
// Requests are served synchronously on the vCPU that rings the doorbell, in ring order, so a
// pause (which waits for every vCPU to leave its hypercall) never strands a request half
// done: each one is either completed before the pause or still posted in the ring, where the
// device's saved position picks it up after a restore or migration (never lost, never run
// twice). FLUSH makes everything completed before it durable (fdatasync); Quiesce() flushes
// unflushed writes so a destination on shared storage reads what the source wrote.
// Thread-safe: one lock serializes the queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device_queue.h"
#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"
#include "ferry/hypervisor/device_state.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

class BlockDevice {
 public:
  // Opens the image read-write; its size must be a positive multiple of 512 bytes.
  static Result<std::unique_ptr<BlockDevice>> Open(const std::string& path, GuestMemory& memory);

  uint64_t sectors() const { return sectors_; }
  uint32_t Setup(uint64_t ring_gpa, uint64_t entries);
  // The doorbell: completes every posted request. Returns FERRY_E_*.
  uint32_t Notify();
  // Makes every completed write durable (called with the vCPUs paused).
  Status Quiesce();
  // Disk journal (replication): while on, every completed write is also recorded, to travel
  // in the next checkpoint. Beyond `cap_bytes` the journal overflows and TakeJournal fails
  // (the standby can no longer be brought up to date by journal alone).
  void StartJournal(uint64_t cap_bytes);
  Result<std::vector<DiskWrite>> TakeJournal();
  void StopJournal();
  BlockState Save() const;
  Status Restore(const BlockState& saved);
  BlockStats stats() const;

 private:
  BlockDevice(UniqueFd fd, uint64_t sectors, GuestMemory& memory)
      : fd_(std::move(fd)), sectors_(sectors), memory_(memory), queue_(memory) {}
  uint16_t Serve(const ferry_desc& d);

  const UniqueFd fd_;
  const uint64_t sectors_;
  GuestMemory& memory_;
  mutable std::mutex mu_;
  DeviceQueue queue_;         // guarded by mu_
  bool unflushed_ = false;    // guarded by mu_: writes since the last fdatasync
  bool flush_failed_ = false; // guarded by mu_: an fdatasync failed; every later flush fails
  BlockStats stats_;          // guarded by mu_
  bool journaling_ = false;            // guarded by mu_
  bool journal_overflow_ = false;      // guarded by mu_
  uint64_t journal_cap_ = 0, journal_bytes_ = 0;  // guarded by mu_
  std::vector<DiskWrite> journal_;     // guarded by mu_
};

}  // namespace ferry::hypervisor
