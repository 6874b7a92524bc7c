// ConvergenceController: after every pre-copy round it decides to go on, to stop and copy, or
// to give up, from what it measured (bandwidth and dirty rate), and sets the vCPU throttle
// (auto-converge) when the guest dirties memory faster than the link drains it. Once the
// target is met it still runs further (short) rounds while each halves the dirty set.
//
// The predicted downtime is honest: remaining dirty pages at the measured wire bytes per page
// and the measured bandwidth, plus the measured fixed costs of a stop (pause, final harvest,
// device state, commit round trip). Pure logic over samples: unit-tested without a VM.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace ferry::migrate {

struct ConvergenceOptions {
  double downtime_ms = 50;        // the target for the stop-and-copy phase
  uint64_t deadline_ms = 120000;  // give up (source keeps running) after this long
  bool auto_converge = true;
  uint32_t throttle_initial = 20;  // percent, as QEMU's auto-converge
  uint32_t throttle_step = 10;
  uint32_t throttle_max = 99;
  // Auto mode (issue 20): where pre-copy cannot converge within the target (the guest
  // re-dirties more than half of what the link drains, or the deadline or
  // postcopy_after_ms is reached), switch to post-copy instead of throttling or giving up.
  bool postcopy = false;
  uint64_t postcopy_after_ms = 0;  // 0: only when the controller predicts no convergence
};

struct RoundSample {
  uint32_t round = 0;
  uint64_t pages_sent = 0;      // pages the round processed (sent or found unchanged)
  uint64_t wire_bytes = 0;      // bytes the round put on the wire
  uint64_t send_ns = 0;         // how long the round took
  uint64_t dirty_pages = 0;     // harvested at the round's end: the next round's work
  uint64_t dirty_window_ns = 0; // the time over which those pages were dirtied
  uint64_t elapsed_ns = 0;      // since the migration began
  double fixed_ms = 0;          // measured cost of a stop beyond sending pages
};

enum class Decision { kContinue, kStopAndCopy, kAbort, kPostcopy };

struct Verdict {
  Decision decision = Decision::kContinue;
  uint32_t throttle = 0;              // percent to apply to every vCPU now
  double predicted_downtime_ms = 0;   // if we stopped now
  double bandwidth_bytes_s = 0;       // measured over all rounds so far
  double dirty_bytes_s = 0;           // this round's dirty rate, in wire bytes
  std::string reason;
};

class ConvergenceController {
 public:
  explicit ConvergenceController(const ConvergenceOptions& options) : options_(options) {}
  Verdict Next(const RoundSample& s);
  uint32_t throttle() const { return throttle_; }
  uint32_t max_throttle() const { return max_throttle_; }

 private:
  ConvergenceOptions options_;
  uint64_t total_bytes_ = 0, total_ns_ = 0, total_pages_ = 0;
  uint32_t throttle_ = 0, max_throttle_ = 0;
  uint32_t refine_rounds_ = 0;  // rounds run after the target was already met

  // A dirty set this small costs microseconds to send: no reason to refine further.
  static constexpr uint64_t kSettledPages = 32;
  static constexpr uint32_t kMaxRefineRounds = 8;
};

}  // namespace ferry::migrate
