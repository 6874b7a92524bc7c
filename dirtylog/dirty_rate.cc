#include "ferry/dirtylog/dirty_rate.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/dirtylog/tracker.h"

namespace ferry::dirtylog {

Result<DirtyRate> MeasureDirtyRate(hypervisor::Vm& vm, double seconds, double interval_s) {
  if (!(seconds > 0) || seconds > 600) return InvalidArgument("--seconds must be in (0, 600]");
  if (!(interval_s > 0) || interval_s > seconds) return InvalidArgument("interval must be in (0, seconds]");
  FERRY_ASSIGN_OR_RETURN(auto tracker, DirtyTracker::Start(vm));
  FERRY_ASSIGN_OR_RETURN(auto initial, tracker->Harvest());  // everything: not a rate
  (void)initial;
  DirtyRate rate;
  rate.source = tracker->source_name();
  std::vector<uint64_t> per_vcpu(vm.config().vcpus, 0);
  std::vector<double> harvest_ms;
  const uint64_t start = MonotonicNs();
  const uint64_t interval_ns = static_cast<uint64_t>(interval_s * 1e9);
  uint64_t next = start;
  while (MonotonicNs() - start < static_cast<uint64_t>(seconds * 1e9)) {
    next += interval_ns;
    uint64_t now = MonotonicNs();
    if (next > now) std::this_thread::sleep_for(std::chrono::nanoseconds(next - now));
    FERRY_ASSIGN_OR_RETURN(auto set, tracker->Harvest());
    rate.pages += set.Count();
    for (size_t i = 0; i < per_vcpu.size(); ++i) per_vcpu[i] += set.per_vcpu[i];
    harvest_ms.push_back(tracker->last_stats().total_ns / 1e6);
    ++rate.harvests;
  }
  rate.seconds = (MonotonicNs() - start) / 1e9;
  FERRY_RETURN_IF_ERROR(tracker->Stop());
  rate.pages_per_s = rate.pages / rate.seconds;
  rate.mb_per_s = rate.pages_per_s * 4096 / 1e6;
  if (rate.source == std::string("ring")) {
    for (uint64_t p : per_vcpu) rate.per_vcpu_pages_per_s.push_back(p / rate.seconds);
  }
  std::sort(harvest_ms.begin(), harvest_ms.end());
  if (!harvest_ms.empty()) rate.harvest_ms_median = harvest_ms[harvest_ms.size() / 2];
  return rate;
}

}  // namespace ferry::dirtylog
