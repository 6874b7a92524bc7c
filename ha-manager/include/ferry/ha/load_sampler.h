// LoadSampler: the load figures an HA agent reports for its host (the report's "stats", which
// the console shows, `ferry ha balance` plans with and the metrics export): per VM its CPU use
// (% of one CPU, from /proc/PID/stat), dirty rate, disk and network rates, replication lag and
// a running sync's progress, all from the VMM's status answers; per host the sums against its
// capacity. Rates are taken over windows of at least half a second. Agent thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/ha/config.h"

namespace ferry::ha {

class LoadSampler {
 public:
  explicit LoadSampler(const HostConfig& host);

  // One child's status answer (a primary's or a standby's) at now_ms.
  void Observe(const std::string& vm, pid_t pid, const nlohmann::json& status, uint64_t now_ms);
  // Drops the VMs not observed since the last call (their processes ended).
  void EndRound();
  // {"host": {cpus, cpu_pct, mem_total_bytes, mem_used_bytes, migration_bytes_per_s},
  //  "vms": {vm: {cpu_pct, vcpus, mem_bytes, dirty_pages_per_s, disk_bytes_per_s,
  //               net_bytes_per_s, lag_ms, wire_bytes, sync: {...} | null}}} (primaries only)
  nlohmann::json Stats() const;

 private:
  struct Sample {
    uint64_t t_ms = 0, cpu_ticks = 0, disk_bytes = 0, net_bytes = 0, wire_bytes = 0;
  };
  struct Vm {
    bool primary = false, seen = false;
    Sample last;  // the start of the current rate window
    double cpu_pct = 0, disk_bps = 0, net_bps = 0, wire_bps = 0;
    nlohmann::json figures;  // the rest, as of the latest status
    uint64_t mem_bytes = 0;
  };

  double cpus_ = 1;
  uint64_t mem_total_ = 0;
  long ticks_per_s_ = 100;
  std::map<std::string, Vm> vms_;
};

}  // namespace ferry::ha
