// Drill faults by name, and what each must lead to (drill.h). The run is drill_run.cc, the
// watching and scoring drill_watch.cc, the fault primitives drill_faults.cc.
#include "ferry/ha/drill.h"

#include <array>

namespace ferry::ha {

using nlohmann::json;

namespace {

constexpr std::array<const char*, kFaultCount> kFaultNames = {
    "kill-host", "partition-host", "kill-vm", "kill-agent", "stop-agent", "cut-replication", "cut-corosync",
    "kill-standby", "kill-host-mid-move", "restart-corosync"};

}  // namespace

const char* FaultName(Fault f) { return kFaultNames.at(static_cast<size_t>(f)); }

std::optional<Fault> ParseFault(std::string_view name) {
  for (size_t i = 0; i < kFaultNames.size(); ++i) {
    if (name == kFaultNames[i]) return static_cast<Fault>(i);
  }
  return std::nullopt;
}

Outcome Expected(Fault f) {
  switch (f) {
    case Fault::kKillStandby:
    case Fault::kCutReplication: return Outcome::kReprotect;
    case Fault::kStopAgent: return Outcome::kNothing;
    default: return Outcome::kFailover;
  }
}

Outcome Expected(Fault f, uint64_t lease_ms, double stop_s) {
  if (f == Fault::kStopAgent && lease_ms && stop_s * 1000 > static_cast<double>(lease_ms + kHungAgentMarginMs)) {
    return Outcome::kFailover;
  }
  return Expected(f);
}

const char* OutcomeName(Outcome o) {
  return o == Outcome::kFailover ? "failover" : o == Outcome::kReprotect ? "reprotect" : "nothing";
}

bool TargetsVm(Fault f) { return f == Fault::kKillVm || f == Fault::kKillStandby || f == Fault::kCutReplication; }

bool DrillFailed(const json& card) { return !card.value("ok", false); }

}  // namespace ferry::ha
