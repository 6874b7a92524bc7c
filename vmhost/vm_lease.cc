// The HA agent's watchdog lease on a VMM (vm_host.h, Lease()): renewed by the agent on every
// probe; once it runs out the VM is fenced, and stays fenced until the lease is renewed and
// the agent unfences it (an agent restarted in time adopts the VMM without a failover).
#include <chrono>
#include <cstdio>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/vmhost/vm_host.h"

namespace ferry::vmhost {

using nlohmann::json;

void VmHost::Lease(uint64_t ttl_ms) {
  std::lock_guard lock(lease_mu_);
  lease_ttl_ms_ = ttl_ms;
  lease_deadline_ns_ = ttl_ms ? MonotonicNs() + ttl_ms * 1000000 : 0;
  lease_expired_ = false;
  if (ttl_ms && !lease_thread_.joinable()) {
    lease_thread_ = std::thread([this] {
      // The lease is what fences a VMM whose agent is gone: an exception (out of memory while
      // fencing) must not end the watchdog, so it starts again.
      for (;;) {
        Status st = Guarded("lease watchdog", [this] { LeaseWatchdog(); });
        if (st.ok()) return;
        std::fprintf(stderr, "ferry: %s; the watchdog starts again\n", st.message().c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  lease_cv_.notify_all();
}

// Waits for the deadline; once it passed (and while it stays passed) fences the VM if there
// is one that is not fenced yet: a VM arriving later by a handover or a promotion too.
void VmHost::LeaseWatchdog() {
  std::unique_lock lock(lease_mu_);
  while (!lease_stop_) {
    if (!lease_deadline_ns_ && !lease_expired_) {
      lease_cv_.wait(lock);
      continue;
    }
    const uint64_t now = MonotonicNs();
    if (!lease_expired_ && now < lease_deadline_ns_) {
      lease_cv_.wait_for(lock, std::chrono::nanoseconds(lease_deadline_ns_ - now));
      continue;
    }
    if (!lease_expired_) {
      lease_expired_ = true;
      std::fprintf(stderr, "ferry: the HA agent's lease (%llu ms) ran out: fencing the VM\n",
                   static_cast<unsigned long long>(lease_ttl_ms_));
    }
    lock.unlock();
    const Phase p = lifecycle_.phase();
    if (vm() && !lifecycle_.fenced() && !IsTerminal(p) && p != Phase::kIncoming && p != Phase::kStandby) {
      (void)Fence();  // admitted in every phase with a VM; an operation holding it gets it when it ends
    }
    lock.lock();
    lease_cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return lease_stop_ || !lease_expired_; });
  }
}

json VmHost::LeaseJson() const {
  std::lock_guard lock(lease_mu_);
  if (!lease_ttl_ms_ && !lease_expired_) return nullptr;
  const uint64_t now = MonotonicNs();
  return {{"ttl_ms", lease_ttl_ms_},
          {"remaining_ms", lease_deadline_ns_ > now ? (lease_deadline_ns_ - now) / 1000000 : 0},
          {"expired", lease_expired_}};
}

}  // namespace ferry::vmhost
