// KvmDirtyLog: the mechanism behind dirty-page tracking of guest RAM, as KVM offers it — the
// per-slot dirty bitmap with manual protect (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG), or
// per-vCPU dirty rings (reap + KVM_RESET_DIRTY_RINGS). Policy (what to harvest when, merging
// failed sends back, rates) lives in dirtylog/; this class only wraps the kernel interface.
//
// The mode is fixed when the VM is created (VmConfig::dirty_ring_entries > 0 selects rings:
// KVM requires the rings before the vCPUs). Owned by the Vm. Thread-safety: Enable/Disable/
// Get/Clear/ResetRings from one controlling thread; Reap and the ring-full path are
// serialized per vCPU by an internal lock and may race the controlling thread.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"

namespace ferry::hypervisor {

class KvmDirtyLog {
 public:
  enum class Mode { kBitmap, kRing };

  struct Slot {
    int vm_fd = -1;
    uint64_t guest_phys_addr = 0;
    uint64_t size = 0;
    uint64_t host_addr = 0;
  };
  // Called by the VM: `vcpu_fds` in index order; ring_entries 0 = bitmap mode (the rings
  // must already be enabled on the VM with EnableRingCapability before vCPUs exist).
  static Result<std::unique_ptr<KvmDirtyLog>> Create(const Slot& slot, const std::vector<int>& vcpu_fds,
                                                     uint32_t ring_entries);
  // Before creating vCPUs: turns on KVM's dirty rings of `entries` (power of two).
  static Status EnableRingCapability(int vm_fd, uint32_t entries);
  ~KvmDirtyLog();

  Mode mode() const { return ring_entries_ ? Mode::kRing : Mode::kBitmap; }
  uint64_t pages() const { return slot_.size / 4096; }
  uint32_t ring_entries() const { return ring_entries_; }
  bool enabled() const { return enabled_; }

  // Starts logging. Bitmap mode enables manual protect once per VM, with KVM's
  // initially-all-set where offered (*initially_set says which: then the first Get returns
  // every page and nothing is write-protected until cleared).
  Status Enable(bool* initially_set);
  Status Disable();

  // Bitmap mode: KVM's dirty bitmap (does not clear it), then clear+re-protect a range of it.
  // Clear takes a 64-aligned first page and the bits for [first_page, first_page+num_pages).
  Status Get(Bitmap* out);
  Status Clear(uint64_t first_page, uint32_t num_pages, const uint64_t* words);

  // Ring mode: moves the dirty entries of vCPU `index` (and any entries an earlier ring-full
  // exit set aside for it) into `out`; returns how many were collected.
  uint64_t Reap(uint32_t index, Bitmap* out);
  Status ResetRings();
  // For a vCPU thread stopped by KVM_EXIT_DIRTY_RING_FULL: sets its entries aside so it can
  // run again; the next Reap returns them.
  Status OnRingFull(uint32_t index);
  // Entries collected from vCPU `index` since creation (ring mode), for per-vCPU rates.
  uint64_t reaped_total(uint32_t index) const;
  // KVM_EXIT_DIRTY_RING_FULL exits handled so far.
  uint64_t ring_full_exits() const { return ring_full_exits_.load(); }

 private:
  struct Ring {
    kvm_dirty_gfn* gfns = nullptr;
    size_t bytes = 0;
    uint32_t fetch = 0;
    std::mutex mu;                 // guards fetch, overflow and the ring's entries
    Bitmap overflow;               // entries set aside by OnRingFull
    uint64_t overflow_count = 0;
    std::atomic<uint64_t> total{0};
  };
  KvmDirtyLog(const Slot& slot, uint32_t ring_entries) : slot_(slot), ring_entries_(ring_entries) {}
  uint64_t ReapLocked(Ring& ring, Bitmap* out);

  const Slot slot_;
  const uint32_t ring_entries_;
  std::vector<std::unique_ptr<Ring>> rings_;
  bool enabled_ = false;
  bool manual_protect_ = false;
  bool initially_set_ = false;
  std::atomic<uint64_t> ring_full_exits_{0};
};

}  // namespace ferry::hypervisor
