#include "ferry/migrate/convergence.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ferry/migrate/protocol.h"

namespace ferry::migrate {

Verdict ConvergenceController::Next(const RoundSample& s) {
  total_bytes_ += s.wire_bytes;
  total_ns_ += s.send_ns;
  total_pages_ += s.pages_sent;
  Verdict v;
  // Bandwidth over every round so far: round 0 dominates and is the best-filled pipe.
  v.bandwidth_bytes_s = total_ns_ ? total_bytes_ * 1e9 / total_ns_ : 0;
  // Wire bytes per dirty page: from this round if it sent enough to judge, else overall.
  double per_page = s.pages_sent >= 256 ? double(s.wire_bytes) / s.pages_sent
                    : total_pages_      ? double(total_bytes_) / total_pages_
                                        : kPageBytes;
  per_page = std::max(per_page, 64.0);  // a record header at least
  v.dirty_bytes_s = s.dirty_window_ns ? s.dirty_pages * per_page * 1e9 / s.dirty_window_ns : 0;
  double send_ms = v.bandwidth_bytes_s > 0 ? s.dirty_pages * per_page / v.bandwidth_bytes_s * 1e3 : 1e9;
  v.predicted_downtime_ms = send_ms + s.fixed_ms;

  char why[160];
  const bool fits = v.predicted_downtime_ms <= options_.downtime_ms || s.dirty_pages == 0;
  // Meeting the target is not the goal, the smallest downtime is: while each round still
  // halves the dirty set, another round (short by then) buys a shorter stop. Once the set
  // stops shrinking it is the guest's steady state, and waiting longer buys nothing.
  const bool shrinking = s.dirty_pages > kSettledPages && s.dirty_pages * 2 < s.pages_sent;
  const bool late = s.elapsed_ns / 1000000 >= options_.deadline_ms;
  if (fits && (!shrinking || late || ++refine_rounds_ > kMaxRefineRounds)) {
    std::snprintf(why, sizeof why, "%llu dirty pages fit the %.0f ms target (predicted %.1f ms)",
                  static_cast<unsigned long long>(s.dirty_pages), options_.downtime_ms, v.predicted_downtime_ms);
    v.decision = Decision::kStopAndCopy;
  } else if (fits) {
    std::snprintf(why, sizeof why, "target met (predicted %.1f ms); refining while the dirty set still halves",
                  v.predicted_downtime_ms);
  } else if (options_.postcopy && (late || (options_.postcopy_after_ms && s.elapsed_ns / 1000000 >= options_.postcopy_after_ms) ||
                                    (v.bandwidth_bytes_s > 0 && v.dirty_bytes_s > 0.5 * v.bandwidth_bytes_s))) {
    std::snprintf(why, sizeof why, "predicted downtime %.1f ms > %.0f ms target and %s: switching to post-copy",
                  v.predicted_downtime_ms, options_.downtime_ms,
                  late ? "the deadline is reached"
                  : options_.postcopy_after_ms && s.elapsed_ns / 1000000 >= options_.postcopy_after_ms
                      ? "--postcopy-after-s has passed"
                      : "the guest dirties faster than half the link drains");
    v.decision = Decision::kPostcopy;
  } else if (late) {
    std::snprintf(why, sizeof why, "deadline of %llu ms reached with %llu pages still dirty (predicted downtime %.0f ms)",
                  static_cast<unsigned long long>(options_.deadline_ms), static_cast<unsigned long long>(s.dirty_pages),
                  v.predicted_downtime_ms);
    v.decision = Decision::kAbort;
  } else {
    // Auto-converge: the guest re-dirties more than half of what the link drains. QEMU adds
    // a fixed step per round (20%, +10%), so a guest at twice the link rate needs many long
    // rounds. Ferry goes at once to the share the measured rates call for: running at
    // (1 - t), the guest must dirty at most half the bandwidth. At least one step more each
    // round, since a guest may catch up on its own backlog when throttled.
    if (options_.auto_converge && v.bandwidth_bytes_s > 0 && v.dirty_bytes_s > 0.5 * v.bandwidth_bytes_s) {
      double running = 1.0 - throttle_ / 100.0;
      double want = 1.0 - running * (0.5 * v.bandwidth_bytes_s / v.dirty_bytes_s);
      uint32_t needed = static_cast<uint32_t>(std::ceil(want * 100));
      uint32_t stepped = throttle_ == 0 ? options_.throttle_initial : throttle_ + options_.throttle_step;
      throttle_ = std::min(options_.throttle_max, std::max(needed, stepped));
      max_throttle_ = std::max(max_throttle_, throttle_);
    }
    std::snprintf(why, sizeof why, "predicted downtime %.1f ms > %.0f ms target", v.predicted_downtime_ms,
                  options_.downtime_ms);
  }
  v.throttle = throttle_;
  v.reason = why;
  return v;
}

}  // namespace ferry::migrate
