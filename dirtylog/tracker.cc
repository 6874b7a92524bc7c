#include "ferry/dirtylog/tracker.h"

#include "ferry/base/clock.h"
#include "ferry/hypervisor/kvm_dirty_log.h"

namespace ferry::dirtylog {

using hypervisor::KvmDirtyLog;

DirtyTracker::DirtyTracker(hypervisor::Vm& vm) : vm_(vm), kvm_(vm.dirty_log()) {}

Result<std::unique_ptr<DirtyTracker>> DirtyTracker::Start(hypervisor::Vm& vm) {
  if (vm.dirty_log().enabled()) return Status(ErrorCode::kBusy, "dirty tracking is already running on this VM");
  std::unique_ptr<DirtyTracker> t(new DirtyTracker(vm));
  const uint64_t pages = vm.memory().size() / hypervisor::kPageSize;
  t->kvm_bits_ = Bitmap(pages);
  t->pending_ = Bitmap(pages);
  FERRY_RETURN_IF_ERROR(t->kvm_.Enable(&t->initially_set_));
  t->running_ = true;
  return t;
}

DirtyTracker::~DirtyTracker() { (void)Stop(); }

Status DirtyTracker::Stop() {
  if (!running_) return Status::Ok();
  running_ = false;
  return kvm_.Disable();
}

const char* DirtyTracker::source_name() const {
  return kvm_.mode() == KvmDirtyLog::Mode::kRing ? "ring" : "bitmap";
}

// KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG (which re-protects) only for the chunks that
// hold bits to clear, at most kClearChunkPages per call. A page written between the two calls
// is already reported; its contents are read by the consumer after this returns.
Status DirtyTracker::HarvestBitmap(Bitmap* out) {
  uint64_t t0 = MonotonicNs();
  FERRY_RETURN_IF_ERROR(kvm_.Get(&kvm_bits_));
  uint64_t t1 = MonotonicNs();
  const uint64_t words = kvm_bits_.word_count();
  const uint64_t* w = kvm_bits_.words();
  if (probe_every_ != 0) w = LeaveHotPagesSet();
  const uint64_t chunk_words = kClearChunkPages / 64;
  for (uint64_t start = 0; start < words; start += chunk_words) {
    uint64_t end = std::min(words, start + chunk_words);
    uint64_t first_dirty = start;
    while (first_dirty < end && w[first_dirty] == 0) ++first_dirty;
    if (first_dirty == end) continue;
    uint64_t last_dirty = end;
    while (w[last_dirty - 1] == 0) --last_dirty;
    uint64_t pages = std::min((last_dirty - first_dirty) * 64, kvm_bits_.size() - first_dirty * 64);
    FERRY_RETURN_IF_ERROR(kvm_.Clear(first_dirty * 64, static_cast<uint32_t>(pages), w + first_dirty));
    ++stats_.clear_calls;
  }
  stats_.fetch_ns = t1 - t0;
  stats_.clear_ns = MonotonicNs() - t1;
  out->MergeFrom(kvm_bits_);
  return Status::Ok();
}

// KeepHotPages: the words to clear, without the pages dirty at this harvest and the last
// (except at a probe, which clears them all).
const uint64_t* DirtyTracker::LeaveHotPagesSet() {
  if (previous_.size() != kvm_bits_.size()) previous_ = clear_ = Bitmap(kvm_bits_.size());
  const bool probe = ++since_probe_ >= probe_every_;
  if (probe) since_probe_ = 0;
  const uint64_t* w = kvm_bits_.words();
  uint64_t* prev = previous_.words();
  uint64_t* clear = clear_.words();
  for (uint64_t i = 0; i < kvm_bits_.word_count(); ++i) {
    const uint64_t hot = probe ? 0 : (w[i] & prev[i]);
    clear[i] = w[i] & ~hot;
    prev[i] = w[i];
    stats_.hot_pages += static_cast<uint64_t>(__builtin_popcountll(hot));
  }
  return clear;
}

// Reap every vCPU's ring (and entries set aside by ring-full exits), then re-arm them all.
Status DirtyTracker::HarvestRings(DirtySet* out) {
  uint64_t t0 = MonotonicNs();
  for (uint32_t i = 0; i < vm_.config().vcpus; ++i) out->per_vcpu[i] = kvm_.Reap(i, &out->pages);
  uint64_t t1 = MonotonicNs();
  FERRY_RETURN_IF_ERROR(kvm_.ResetRings());
  stats_.fetch_ns = t1 - t0;
  stats_.clear_ns = MonotonicNs() - t1;
  stats_.clear_calls = 1;
  return Status::Ok();
}

Result<DirtySet> DirtyTracker::Harvest() {
  if (!running_) return InvalidArgument("dirty tracking is stopped");
  uint64_t t0 = MonotonicNs();
  stats_ = HarvestStats{};
  DirtySet set;
  set.pages = Bitmap(kvm_bits_.size());
  set.per_vcpu.assign(vm_.config().vcpus, 0);
  if (kvm_.mode() == KvmDirtyLog::Mode::kBitmap) {
    FERRY_RETURN_IF_ERROR(HarvestBitmap(&set.pages));
  } else {
    FERRY_RETURN_IF_ERROR(HarvestRings(&set));
  }
  Bitmap device(kvm_bits_.size());
  vm_.memory().TakeDeviceDirty(&device);
  set.device_pages = device.Count();
  set.pages.MergeFrom(device);
  set.pages.MergeFrom(pending_);
  pending_.ClearAll();
  // Everything counts as dirty at the start; KVM says so itself when initially-all-set is on.
  if (first_ && !initially_set_) set.pages.SetAll();
  first_ = false;
  stats_.pages = set.pages.Count();
  stats_.total_ns = MonotonicNs() - t0;
  return set;
}

void DirtyTracker::MergeBack(const DirtySet& set) { pending_.MergeFrom(set.pages); }

}  // namespace ferry::dirtylog
