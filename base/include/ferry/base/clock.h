// Host clocks used for measurements: monotonic and realtime nanoseconds, and the TSC.
// Thread-safe.
#pragma once

#include <time.h>
#include <x86intrin.h>

#include <cstdint>

namespace ferry {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

inline uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

// Wall-clock milliseconds: comparable between processes on one machine (the HA agents'
// event times and a drill's fault time).
inline uint64_t RealtimeMs() { return RealtimeNs() / 1000000; }

// Monotonic milliseconds: for durations (timeouts, silence, backoff), immune to clock steps.
inline uint64_t MonotonicMs() { return MonotonicNs() / 1000000; }

inline uint64_t ReadTsc() { return __rdtsc(); }

}  // namespace ferry
