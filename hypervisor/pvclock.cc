#include "pvclock.h"

#include <atomic>
#include <cstring>

#include "ferry/base/clock.h"
#include "ferry/hypervisor/guest_abi.h"
#include "kvm_sys.h"

namespace ferry::hypervisor {
namespace {

constexpr uint32_t kMsrTsc = 0x10;

Result<uint64_t> GuestTsc(int vcpu_fd) {
  std::vector<sys::Msr> msrs = {{kMsrTsc, 0}};
  FERRY_RETURN_IF_ERROR(sys::GetMsrs(vcpu_fd, msrs));
  return msrs[0].value;
}

uint64_t CalibrateTscHz() {
  uint64_t t0 = MonotonicNs(), c0 = ReadTsc();
  while (MonotonicNs() - t0 < 20'000'000) {
  }
  uint64_t t1 = MonotonicNs(), c1 = ReadTsc();
  return (c1 - c0) * 1'000'000'000ull / (t1 - t0);
}

}  // namespace

Status PvClock::Publish(GuestMemory& memory, int vcpu_fd, uint64_t guest_ns) {
  auto khz = sys::IoctlValue(vcpu_fd, KVM_GET_TSC_KHZ, 0, "KVM_GET_TSC_KHZ");
  tsc_hz_ = (khz.ok() && khz.value() > 0) ? uint64_t(khz.value()) * 1000 : CalibrateTscHz();
  uint64_t before = ReadTsc();
  FERRY_ASSIGN_OR_RETURN(uint64_t guest_tsc, GuestTsc(vcpu_fd));
  uint64_t after = ReadTsc();
  guest_tsc_offset_ = static_cast<int64_t>(guest_tsc - (before + (after - before) / 2));
  tsc_mul_ = static_cast<uint64_t>((static_cast<unsigned __int128>(1'000'000'000ull) << 32) / tsc_hz_);
  tsc_base_ = ReadTsc() + guest_tsc_offset_;
  ns_base_ = guest_ns;

  auto* page = reinterpret_cast<ferry_shared_page*>(memory.host() + FERRY_GPA_SHARED);
  std::atomic_ref<uint32_t> version(page->clock_version);
  version.fetch_add(1);  // odd: guest readers retry
  page->tsc_base = tsc_base_;
  page->ns_base = ns_base_;
  page->tsc_mul = tsc_mul_;
  version.fetch_add(1);
  memory.MarkDirty(FERRY_GPA_SHARED, sizeof(ferry_shared_page));
  return Status::Ok();
}

uint64_t PvClock::GuestNs() const {
  uint64_t delta = ReadTsc() + guest_tsc_offset_ - tsc_base_;
  return ns_base_ + static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * tsc_mul_) >> 32);
}

ClockState PvClock::Save() const { return ClockState{GuestNs(), RealtimeNs()}; }

uint64_t PvClock::ResumeNs(const ClockState& saved) {
  uint64_t now = RealtimeNs();
  return saved.guest_ns + (now > saved.host_realtime_ns ? now - saved.host_realtime_ns : 0);
}

}  // namespace ferry::hypervisor
