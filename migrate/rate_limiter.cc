#include "ferry/migrate/rate_limiter.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "ferry/base/clock.h"

namespace ferry::migrate {

RateLimiter::RateLimiter(uint64_t bytes_per_s) : rate_(bytes_per_s), last_ns_(MonotonicNs()) {}

void RateLimiter::Acquire(uint64_t bytes) {
  if (rate_ == 0) return;
  const double burst = rate_ * 0.05;
  uint64_t wait_ns = 0;
  {
    std::lock_guard lock(mu_);
    uint64_t now = MonotonicNs();
    tokens_ = std::min(burst, tokens_ + (now - last_ns_) * 1e-9 * rate_);
    last_ns_ = now;
    // Take the bytes now (possibly into debt) and sleep the debt off outside the lock, so
    // concurrent streams queue fairly instead of spinning.
    tokens_ -= bytes;
    if (tokens_ < 0) wait_ns = static_cast<uint64_t>(-tokens_ / rate_ * 1e9);
  }
  if (wait_ns) std::this_thread::sleep_for(std::chrono::nanoseconds(wait_ns));
}

}  // namespace ferry::migrate
