// ParallelFor: splits [0, n) into `workers` contiguous ranges and runs fn(begin, end, worker)
// on that many threads (the caller's thread runs the first range), then returns the first
// failed Status, if any (an exception in a worker is that worker's failure: Guarded). For bulk
// memory work on the snapshot and migration paths.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "ferry/base/guard.h"
#include "ferry/base/status.h"

namespace ferry {

inline Status ParallelFor(uint64_t n, unsigned workers, const std::function<Status(uint64_t, uint64_t, unsigned)>& fn) {
  workers = std::max(1u, std::min<unsigned>(workers, static_cast<unsigned>(std::max<uint64_t>(n, 1))));
  std::vector<Status> results(workers);
  std::vector<std::thread> threads;
  auto range = [&](unsigned w) {
    uint64_t begin = n * w / workers, end = n * (w + 1) / workers;
    results[w] = Guarded("a parallel worker", [&] { return fn(begin, end, w); });
  };
  for (unsigned w = 1; w < workers; ++w) threads.emplace_back(range, w);
  range(0);
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    if (!r.ok()) return r;
  }
  return Status::Ok();
}

// Worker count for bulk copies: the machine's cores, at most `cap`.
inline unsigned BulkWorkers(unsigned cap = 4) {
  return std::max(1u, std::min(cap, std::thread::hardware_concurrency()));
}

}  // namespace ferry
