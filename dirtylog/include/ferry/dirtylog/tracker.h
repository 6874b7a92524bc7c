// DirtyTracker: one interface over the three sources of dirty pages — KVM's dirty bitmap
// (manual protect, cleared in chunks), KVM's per-vCPU dirty rings, and the VMM's own
// device-write bitmap — for migration, replication and dirty-rate measurement.
//
// Harvest() returns every page written since the previous harvest (the first harvest returns
// all of guest RAM) and re-arms tracking for them. A consumer that fails to send a harvested
// set hands it back with MergeBack(); its pages are part of the next harvest, so no dirty page
// is ever lost. A page's contents must be read after the harvest that reported it.
//
// One tracker per VM at a time (KVM logs per memory slot). Not thread-safe: one owner thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/dirtylog/page_ranges.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::dirtylog {

struct DirtySet {
  Bitmap pages;                         // one bit per guest page
  std::vector<uint64_t> per_vcpu;       // pages each vCPU dirtied (ring source only)
  uint64_t device_pages = 0;            // pages written by the VMM itself
  uint64_t Count() const { return pages.Count(); }
  std::vector<PageRange> Ranges() const { return Coalesce(pages); }
};

struct HarvestStats {
  uint64_t pages = 0;
  uint64_t fetch_ns = 0;  // KVM_GET_DIRTY_LOG, or reaping the rings
  uint64_t clear_ns = 0;  // KVM_CLEAR_DIRTY_LOG chunks, or KVM_RESET_DIRTY_RINGS
  uint64_t total_ns = 0;
  uint64_t clear_calls = 0;
  uint64_t hot_pages = 0;  // reported dirty and left writable (KeepHotPages)
};

class DirtyTracker {
 public:
  // Turns on KVM dirty logging for `vm` (bitmap or ring, as the VM was created).
  static Result<std::unique_ptr<DirtyTracker>> Start(hypervisor::Vm& vm);
  ~DirtyTracker();  // turns logging off
  DirtyTracker(const DirtyTracker&) = delete;
  DirtyTracker& operator=(const DirtyTracker&) = delete;

  Result<DirtySet> Harvest();
  void MergeBack(const DirtySet& set);
  const HarvestStats& last_stats() const { return stats_; }
  const char* source_name() const;
  Status Stop();

  // Replication's hot set (bitmap source only). Re-protecting a page the guest rewrites every
  // epoch costs it a write-protect fault per page per epoch (microseconds each under nested
  // KVM), only to learn what is nearly certain. With this on, a page KVM reported dirty at two
  // harvests in a row is not cleared: it stays writable, and KVM, whose bit for it stays set,
  // reports it dirty at every harvest, written or not (so it is always sent: never lost, at
  // worst sent unchanged). Every `probe_every`-th harvest clears every page as before, so a
  // page that has gone cold stops being sent within `probe_every` harvests. 0 turns it off.
  void KeepHotPages(uint32_t probe_every) { probe_every_ = probe_every; }

  // Pages per KVM_CLEAR_DIRTY_LOG call: bounds how long KVM holds its MMU lock per call.
  static constexpr uint64_t kClearChunkPages = 16384;  // 64 MiB of guest RAM

 private:
  explicit DirtyTracker(hypervisor::Vm& vm);
  Status HarvestBitmap(Bitmap* out);
  Status HarvestRings(DirtySet* out);
  const uint64_t* LeaveHotPagesSet();

  hypervisor::Vm& vm_;
  hypervisor::KvmDirtyLog& kvm_;
  bool first_ = true;
  bool initially_set_ = false;
  bool running_ = false;
  Bitmap kvm_bits_;   // scratch for KVM_GET_DIRTY_LOG
  Bitmap pending_;    // merged-back pages, returned by the next harvest
  Bitmap previous_;   // KVM's bits at the previous harvest (KeepHotPages)
  Bitmap clear_;      // what this harvest clears (KeepHotPages)
  uint32_t probe_every_ = 0;
  uint32_t since_probe_ = 0;
  HarvestStats stats_;
};

}  // namespace ferry::dirtylog
