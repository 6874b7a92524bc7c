// EpochController: how long the guest runs between checkpoints, and how hard it is throttled.
//
// An epoch's checkpoint is shipped while the guest runs the next epoch; the next pause waits
// for its acknowledgement. When shipping takes longer than the interval, the standby would
// fall behind without bound, so the interval grows to fit the measured ship time (up to a
// maximum); at the maximum, the vCPUs are throttled so the guest dirties less per epoch. When
// shipping is fast again, the throttle comes off first and the interval shrinks back to the
// configured one. Pure logic over samples: unit-tested without a VM. Not thread-safe.
#pragma once

#include <cstdint>

namespace ferry::replication {

struct EpochOptions {
  double interval_ms = 25;       // the target: guest run time between checkpoints
  double max_interval_ms = 1000; // never stretched beyond this
  bool throttle = true;          // may throttle the vCPUs at the maximum interval
  uint32_t throttle_step = 10;   // percent
  uint32_t throttle_max = 80;
};

struct EpochSample {
  double pause_ms = 0;  // the guest stood still (pause, harvest, copy, state)
  double ship_ms = 0;   // resume to the standby's acknowledgement
};

struct EpochPlan {
  double interval_ms = 0;  // for the next epoch
  uint32_t throttle = 0;   // percent, for every vCPU
  bool lagging = false;    // this checkpoint took longer to ship than its interval
};

class EpochController {
 public:
  explicit EpochController(const EpochOptions& o) : o_(o), interval_ms_(o.interval_ms) {}
  EpochPlan Next(const EpochSample& s);
  double interval_ms() const { return interval_ms_; }
  uint32_t throttle() const { return throttle_; }

 private:
  EpochOptions o_;
  double interval_ms_;
  uint32_t throttle_ = 0;
};

}  // namespace ferry::replication
