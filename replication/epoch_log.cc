#include "epoch_log.h"

#include <algorithm>
#include <cmath>

namespace ferry::replication {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100 * v.size()));
  rank = std::clamp<size_t>(rank, 1, v.size());
  std::nth_element(v.begin(), v.begin() + (rank - 1), v.end());
  return v[rank - 1];
}

void EpochLog::Add(const EpochStats& e) {
  window_.push_back(e);
  if (window_.size() > kWindow) window_.pop_front();
  pause_max_ = std::max(pause_max_, e.pause_ms);
  lag_max_ = std::max(lag_max_, e.lag_ms);
}

void EpochLog::Summarize(ReplicationStatus* s) const {
  std::vector<double> pause, lag, ship;
  for (const auto& e : window_) {
    pause.push_back(e.pause_ms);
    lag.push_back(e.lag_ms);
    ship.push_back(e.ship_ms);
  }
  s->pause_ms_p50 = Percentile(pause, 50);
  s->pause_ms_p99 = Percentile(pause, 99);
  s->pause_ms_max = pause_max_;
  s->lag_ms_p50 = Percentile(lag, 50);
  s->lag_ms_max = lag_max_;
  s->ship_ms_p50 = Percentile(ship, 50);
  size_t from = window_.size() > kRecent ? window_.size() - kRecent : 0;
  s->recent.assign(window_.begin() + from, window_.end());
}

}  // namespace ferry::replication
