// RateLimiter: a token bucket shared by a migration's streams, so `--bandwidth` caps their
// sum. Acquire() blocks the calling thread until its bytes fit. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>

namespace ferry::migrate {

class RateLimiter {
 public:
  // bytes_per_s == 0: unlimited. Bursts up to 50 ms worth of bytes.
  explicit RateLimiter(uint64_t bytes_per_s);
  void Acquire(uint64_t bytes);
  uint64_t rate() const { return rate_; }

 private:
  const uint64_t rate_;
  std::mutex mu_;
  double tokens_ = 0;      // guarded by mu_
  uint64_t last_ns_ = 0;   // guarded by mu_
};

}  // namespace ferry::migrate
