#include "ferry/replication/epoch_controller.h"

#include <algorithm>

namespace ferry::replication {

EpochPlan EpochController::Next(const EpochSample& s) {
  EpochPlan plan;
  plan.lagging = s.ship_ms > interval_ms_;
  if (plan.lagging) {
    // Fit the interval to what shipping costs, with headroom, so the next pause does not
    // wait on the acknowledgement.
    double want = std::min(o_.max_interval_ms, s.ship_ms * 1.25);
    if (want > interval_ms_) {
      interval_ms_ = want;
    } else if (o_.throttle && interval_ms_ >= o_.max_interval_ms) {
      throttle_ = std::min(o_.throttle_max, throttle_ + o_.throttle_step);
    }
  } else if (s.ship_ms < interval_ms_ * 0.5) {
    if (throttle_ > 0) {
      throttle_ = throttle_ > o_.throttle_step ? throttle_ - o_.throttle_step : 0;
    } else {
      interval_ms_ = std::max(o_.interval_ms, std::max(s.ship_ms * 1.25, interval_ms_ * 0.75));
    }
  }
  plan.interval_ms = interval_ms_;
  plan.throttle = throttle_;
  return plan;
}

}  // namespace ferry::replication
