// GuestMemory: the guest's RAM, one memfd mapped shared into the VMM (so it can later be
// handed to another process, snapshotted or served by userfaultfd).
//
// Owns the memfd and the mapping. Guest-physical address 0 maps to host(). Range checks are
// the caller's duty only for trusted internal paths; every address that comes from the guest
// or a peer goes through Check() / Slice(). The mapping itself is shared with the vCPUs, so
// concurrent access follows the guest's own rules; VMM-side writes go through Write() so a
// later dirty-tracking layer sees every one of them.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::hypervisor {

inline constexpr uint64_t kPageSize = 4096;

class GuestMemory {
 public:
  static Result<GuestMemory> Create(uint64_t bytes);
  ~GuestMemory();
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t size() const { return size_; }
  uint8_t* host() const { return base_; }
  int fd() const { return fd_.get(); }

  // Ok when [gpa, gpa+len) lies inside guest RAM (overflow-safe).
  bool Contains(uint64_t gpa, uint64_t len) const {
    return gpa <= size_ && len <= size_ - gpa;
  }
  // A checked view of guest memory; error if out of range.
  Result<std::span<uint8_t>> Slice(uint64_t gpa, uint64_t len) const;
  Status Read(uint64_t gpa, void* out, uint64_t len) const;
  // Every VMM-side write into guest RAM is recorded here, because KVM's dirty log sees only
  // the guest's own writes. Write() and WriteThroughFd() mark for you; code that writes
  // through host() directly (hypercall results, the shared page) must call MarkDirty.
  // Thread-safe.
  void MarkDirty(uint64_t gpa, uint64_t len);
  // Moves the device-written pages into `out` (OR) and clears them here. Thread-safe.
  void TakeDeviceDirty(Bitmap* out) { device_dirty_.TakeAtomic(out); }
  Status Write(uint64_t gpa, const void* data, uint64_t len);
  // Writes through the memfd (a kernel copy): fills fresh memory without taking a page fault
  // per 4 KiB page in our mapping, which is expensive under nested virtualization.
  Status WriteThroughFd(uint64_t gpa, const void* data, uint64_t len);
  // Gathers `parts` (each a whole number of pages, together contiguous from `gpa`) into one
  // pwritev: how a migration receiver lands a run of pages taken from several buffers.
  Status WriteVThroughFd(uint64_t gpa, std::span<const std::span<const uint8_t>> parts);
  // Drops [gpa, gpa + len) (whole pages) from guest RAM: those pages are holes again (they
  // read as zero, or raise a userfaultfd MISSING fault while one is registered). A post-copy
  // destination drops the pages the source changed after sending them.
  Status Discard(uint64_t gpa, uint64_t len);
  // Calls fn(offset, length) for each populated range of the memfd (SEEK_DATA/SEEK_HOLE);
  // memory outside them was never written and reads as zero.
  Status ForEachPopulatedRange(const std::function<void(uint64_t, uint64_t)>& fn) const;

 private:
  GuestMemory(UniqueFd fd, uint8_t* base, uint64_t size)
      : fd_(std::move(fd)), base_(base), size_(size), device_dirty_(size / kPageSize) {}
  UniqueFd fd_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  Bitmap device_dirty_;  // one bit per page; SetAtomic/TakeAtomic only
};

}  // namespace ferry::hypervisor
