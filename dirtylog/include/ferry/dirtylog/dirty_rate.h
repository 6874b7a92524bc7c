// Dirty-rate measurement of a running VM: harvests every `interval` for `seconds` and reports
// the pages dirtied per second (the rate a migration round of that length would see), per
// vCPU where the ring source gives it. Blocks the caller for `seconds`. Uses the VM's one
// tracker slot, so it fails while a migration or another measurement runs.
#pragma once

#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::dirtylog {

struct DirtyRate {
  std::string source;         // "bitmap" or "ring"
  double seconds = 0;         // measured window
  uint32_t harvests = 0;
  uint64_t pages = 0;         // sum over harvests
  double pages_per_s = 0;
  double mb_per_s = 0;        // 10^6 bytes per second
  std::vector<double> per_vcpu_pages_per_s;  // ring only
  double harvest_ms_median = 0;
};

Result<DirtyRate> MeasureDirtyRate(hypervisor::Vm& vm, double seconds, double interval_s = 0.1);

}  // namespace ferry::dirtylog
