#include "ferry/hypervisor/kvm_dirty_log.h"

#include <sys/mman.h>
#include <unistd.h>

#include "kvm_sys.h"

namespace ferry::hypervisor {
namespace {

Result<int> CheckCap(int vm_fd, int cap) { return sys::IoctlValue(vm_fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION"); }

Status EnableCap(int vm_fd, uint32_t cap, uint64_t arg0, const char* what) {
  kvm_enable_cap c{};
  c.cap = cap;
  c.args[0] = arg0;
  return sys::Ioctl(vm_fd, KVM_ENABLE_CAP, &c, what);
}

}  // namespace

Status KvmDirtyLog::EnableRingCapability(int vm_fd, uint32_t entries) {
  // KVM's smallest ring is one page of 16-byte entries.
  if (entries < 256 || (entries & (entries - 1)) != 0) return InvalidArgument("dirty ring entries must be a power of two >= 256");
  uint64_t bytes = uint64_t{entries} * sizeof(kvm_dirty_gfn);
  // Prefer the acquire/release flavour (needed on weakly ordered hosts, harmless on x86).
  for (auto [cap, name] : {std::pair{KVM_CAP_DIRTY_LOG_RING_ACQ_REL, "KVM_CAP_DIRTY_LOG_RING_ACQ_REL"},
                           std::pair{KVM_CAP_DIRTY_LOG_RING, "KVM_CAP_DIRTY_LOG_RING"}}) {
    auto max = CheckCap(vm_fd, cap);
    if (!max.ok() || *max <= 0) continue;
    if (bytes > static_cast<uint64_t>(*max)) {
      return InvalidArgument("dirty ring of " + std::to_string(entries) + " entries exceeds KVM's maximum of " +
                             std::to_string(*max / sizeof(kvm_dirty_gfn)));
    }
    return EnableCap(vm_fd, cap, bytes, name);
  }
  return Unsupported("this KVM offers no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
}

Result<std::unique_ptr<KvmDirtyLog>> KvmDirtyLog::Create(const Slot& slot, const std::vector<int>& vcpu_fds,
                                                         uint32_t ring_entries) {
  std::unique_ptr<KvmDirtyLog> log(new KvmDirtyLog(slot, ring_entries));
  if (ring_entries) {
    for (int fd : vcpu_fds) {
      auto ring = std::make_unique<Ring>();
      ring->bytes = uint64_t{ring_entries} * sizeof(kvm_dirty_gfn);
      void* p = mmap(nullptr, ring->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
      if (p == MAP_FAILED) return ErrnoError("mmap dirty ring");
      ring->gfns = static_cast<kvm_dirty_gfn*>(p);
      ring->overflow = Bitmap(slot.size / 4096);
      log->rings_.push_back(std::move(ring));
    }
  }
  return log;
}

KvmDirtyLog::~KvmDirtyLog() {
  for (auto& r : rings_) {
    // SAFETY: the mapping made in Create, exactly; the vCPU threads are gone.
    if (r->gfns) munmap(r->gfns, r->bytes);
  }
}

Status KvmDirtyLog::Enable(bool* initially_set) {
  if (enabled_) return InvalidArgument("dirty logging is already on");
  if (mode() == Mode::kBitmap && !manual_protect_) {
    FERRY_ASSIGN_OR_RETURN(int flags, CheckCap(slot_.vm_fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
    if (!(flags & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
      return Unsupported("KVM lacks manual dirty-log protect (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)");
    }
    uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | (flags & KVM_DIRTY_LOG_INITIALLY_SET);
    FERRY_RETURN_IF_ERROR(EnableCap(slot_.vm_fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, want, "enable manual dirty-log protect"));
    manual_protect_ = true;
    initially_set_ = want & KVM_DIRTY_LOG_INITIALLY_SET;
  }
  FERRY_RETURN_IF_ERROR(sys::SetMemorySlot(slot_.vm_fd, slot_.guest_phys_addr, slot_.size, slot_.host_addr, KVM_MEM_LOG_DIRTY_PAGES));
  enabled_ = true;
  if (initially_set) *initially_set = mode() == Mode::kBitmap && initially_set_;
  return Status::Ok();
}

Status KvmDirtyLog::Disable() {
  if (!enabled_) return Status::Ok();
  FERRY_RETURN_IF_ERROR(sys::SetMemorySlot(slot_.vm_fd, slot_.guest_phys_addr, slot_.size, slot_.host_addr, 0));
  enabled_ = false;
  return Status::Ok();
}

Status KvmDirtyLog::Get(Bitmap* out) {
  if (mode() != Mode::kBitmap || !enabled_) return InvalidArgument("the dirty bitmap is not enabled");
  if (out->size() != pages()) *out = Bitmap(pages());
  kvm_dirty_log log{};
  log.slot = 0;
  log.dirty_bitmap = out->words();
  return sys::Ioctl(slot_.vm_fd, KVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG");
}

Status KvmDirtyLog::Clear(uint64_t first_page, uint32_t num_pages, const uint64_t* words) {
  if (first_page % 64 != 0) return InvalidArgument("KVM_CLEAR_DIRTY_LOG needs a 64-page aligned start");
  kvm_clear_dirty_log c{};
  c.slot = 0;
  c.first_page = first_page;
  c.num_pages = num_pages;
  c.dirty_bitmap = const_cast<uint64_t*>(words);
  return sys::Ioctl(slot_.vm_fd, KVM_CLEAR_DIRTY_LOG, &c, "KVM_CLEAR_DIRTY_LOG");
}

uint64_t KvmDirtyLog::ReapLocked(Ring& ring, Bitmap* out) {
  uint64_t n = 0;
  for (;;) {
    kvm_dirty_gfn& e = ring.gfns[ring.fetch % ring_entries_];
    // The kernel publishes an entry by setting DIRTY (release); read it with acquire.
    uint32_t flags = std::atomic_ref<uint32_t>(e.flags).load(std::memory_order_acquire);
    if (!(flags & KVM_DIRTY_GFN_F_DIRTY)) break;
    if (e.slot == 0 && e.offset < pages()) out->Set(e.offset);
    std::atomic_ref<uint32_t>(e.flags).store(KVM_DIRTY_GFN_F_RESET, std::memory_order_release);
    ++ring.fetch;
    ++n;
  }
  return n;
}

uint64_t KvmDirtyLog::Reap(uint32_t index, Bitmap* out) {
  if (index >= rings_.size()) return 0;
  Ring& ring = *rings_[index];
  std::lock_guard lock(ring.mu);
  uint64_t n = ReapLocked(ring, out) + ring.overflow_count;
  if (ring.overflow_count) {
    out->MergeFrom(ring.overflow);
    ring.overflow.ClearAll();
    ring.overflow_count = 0;
  }
  ring.total += n;
  return n;
}

Status KvmDirtyLog::ResetRings() {
  return sys::Ioctl(slot_.vm_fd, KVM_RESET_DIRTY_RINGS, 0ul, "KVM_RESET_DIRTY_RINGS");
}

Status KvmDirtyLog::OnRingFull(uint32_t index) {
  if (index >= rings_.size()) return Internal("dirty ring full on a vCPU without a ring");
  ++ring_full_exits_;
  {
    Ring& ring = *rings_[index];
    std::lock_guard lock(ring.mu);
    ring.overflow_count += ReapLocked(ring, &ring.overflow);
  }
  return ResetRings();
}

uint64_t KvmDirtyLog::reaped_total(uint32_t index) const {
  return index < rings_.size() ? rings_[index]->total.load() : 0;
}

}  // namespace ferry::hypervisor
