// EpochLog: the primary's per-epoch statistics — a window of recent epochs for percentiles
// and for status, plus all-time maxima. Guarded by its owner's lock.
#pragma once

#include <deque>

#include "ferry/replication/replicator.h"

namespace ferry::replication {

class EpochLog {
 public:
  void Add(const EpochStats& e);
  // Fills the percentile and recent fields of `s`.
  void Summarize(ReplicationStatus* s) const;

  static constexpr size_t kWindow = 4096;  // epochs kept for percentiles (~100 s at 40/s)
  static constexpr size_t kRecent = 16;    // epochs shown in status

 private:
  std::deque<EpochStats> window_;
  double pause_max_ = 0, lag_max_ = 0;
};

// The p-th percentile (0..100) of `v` (nearest rank); 0 for an empty set.
double Percentile(std::vector<double> v, double p);

}  // namespace ferry::replication
