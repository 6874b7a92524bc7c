// BlockDevice: the paravirtual disk. One request queue in guest memory (guest_abi.h), backed
// by a raw image file on the host.
//
// Requests are served synchronously on the vCPU that rings the doorbell, in ring order, so a
// pause (which waits for every vCPU to leave its hypercall) never strands a request half
// done: each one is either completed before the pause or still posted in the ring, where the
// device's saved position picks it up after a restore or migration (never lost, never run
// twice). FLUSH makes everything completed before it durable (fdatasync); Quiesce() flushes
// unflushed writes so a destination on shared storage reads what the source wrote.
// The write-back overlay (post-copy) holds guest writes in memory instead of the image; see
// StartOverlay.
// Thread-safe: serve_mu_ serializes serving the ring, mu_ guards the device's state.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device_queue.h"
#include "disk_overlay.h"
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
  // Write-back overlay (post-copy destination; independent of the journal): while on, every
  // guest write is held in memory and never reaches the image, reads see the held sectors
  // over the image's, and FLUSH succeeds without touching the image: held writes become
  // durable only at CommitOverlay (a crash before it loses them, as it loses the VM).
  // A write that would take the overlay past `cap_bytes` (held sector payload) blocks the
  // vCPU serving it, and every vCPU ringing this disk after it, until CommitOverlay (the
  // write then reaches the image like any other) or DiscardOverlay (it fails with
  // FERRY_STATUS_IOERR). A blocked vCPU cannot park: commit or discard without pausing first.
  // Called again while on, it only changes the cap (and wakes a blocked write to re-check).
  void StartOverlay(uint64_t cap_bytes);
  // Writes every held sector to the image in sector order, fdatasyncs, turns the overlay
  // off. On failure the overlay stays on and whole (a retry writes it all again), though the
  // image may hold part of it. Off: Ok; after a discard: kRefused.
  Status CommitOverlay();
  // Drops every held write and turns the overlay off for good: every later write and flush
  // fails with FERRY_STATUS_IOERR, since the VM is being thrown away and the source that
  // takes it back shares the image. No overlay on: a no-op.
  void DiscardOverlay();
  uint64_t overlay_bytes() const;
  BlockState Save() const;
  Status Restore(const BlockState& saved);
  BlockStats stats() const;

 private:
  BlockDevice(UniqueFd fd, uint64_t sectors, GuestMemory& memory)
      : fd_(std::move(fd)), sectors_(sectors), memory_(memory), queue_(memory) {}
  uint16_t Serve(const ferry_desc& d, std::unique_lock<std::mutex>& lock);
  uint16_t ServeWrite(const ferry_desc& d, uint8_t* buf, std::unique_lock<std::mutex>& lock);
  // Waits (releasing mu_) while the write would take the overlay past its cap; false if
  // writes are refused (the overlay was discarded).
  bool WaitForOverlayRoom(uint64_t sector, uint64_t count, std::unique_lock<std::mutex>& lock);

  const UniqueFd fd_;
  const uint64_t sectors_;
  GuestMemory& memory_;
  // Held by Notify and Setup around mu_: requests are served one at a time in ring order,
  // even while an overlay wait releases mu_ (a blocked request is still posted: Save() sees it).
  std::mutex serve_mu_;
  mutable std::mutex mu_;
  DeviceQueue queue_;         // guarded by mu_
  bool unflushed_ = false;    // guarded by mu_: writes since the last fdatasync
  bool flush_failed_ = false; // guarded by mu_: an fdatasync failed; every later flush fails
  BlockStats stats_;          // guarded by mu_
  bool journaling_ = false;            // guarded by mu_
  bool journal_overflow_ = false;      // guarded by mu_
  uint64_t journal_cap_ = 0, journal_bytes_ = 0;  // guarded by mu_
  std::vector<DiskWrite> journal_;     // guarded by mu_
  DiskOverlay overlay_;                // guarded by mu_
  bool overlay_on_ = false;            // guarded by mu_
  bool writes_refused_ = false;        // guarded by mu_: the overlay was discarded (for good)
  uint64_t overlay_cap_ = 0;           // guarded by mu_
  uint64_t overlay_epoch_ = 0;         // guarded by mu_: bumped by start, commit, discard
  std::condition_variable overlay_cv_; // with mu_: signals overlay_epoch_
};

}  // namespace ferry::hypervisor
