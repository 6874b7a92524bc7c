// Drill faults by name, and what each must lead to (drill.h). The run is drill_run.cc, the
// watching and scoring drill_watch.cc, the fault primitives drill_faults.cc.
#include "ferry/ha/drill.h"

#include <array>
#include <cstdio>

namespace ferry::ha {

using nlohmann::json;

namespace {

constexpr std::array<const char*, kFaultCount> kFaultNames = {
    "kill-host", "partition-host", "kill-vm", "kill-agent", "stop-agent", "cut-replication", "cut-corosync",
    "kill-standby", "kill-host-mid-move", "restart-corosync", "stop-vm"};

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
    case Fault::kCutReplication:
    case Fault::kStopVm: return Outcome::kReprotect;  // the usual stop (StopVmOutcome)
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

Result<Outcome> StopVmOutcome(const ClusterConfig& c, double stop_s) {
  const double ms = stop_s * 1000, io = static_cast<double>(c.io_timeout_ms), hung = static_cast<double>(c.hung_vmm_ms);
  const double margin = kHungAgentMarginMs;
  if (ms + 500 <= io) return Outcome::kNothing;
  if (ms >= io + 1000 && (hung == 0 || ms + 2000 <= hung)) return Outcome::kReprotect;
  if (hung > 0 && ms >= hung + margin) return Outcome::kFailover;
  char buf[400];
  if (hung == 0) {
    std::snprintf(buf, sizeof buf,
                  "stop-vm: a stop of %.1f s could end either way (the standby gives up after io_timeout_ms %.1f s): "
                  "choose up to %.1f s (nothing) or from %.1f s (re-protection; hung_vmm_ms is 0: never a failover)",
                  stop_s, io / 1000, (io - 500) / 1000, (io + 1000) / 1000);
  } else {
    std::snprintf(buf, sizeof buf,
                  "stop-vm: a stop of %.1f s could end either way (the standby gives up after io_timeout_ms %.1f s, the "
                  "agent kills a VMM silent for hung_vmm_ms %.1f s): choose up to %.1f s (nothing), %.1f to %.1f s "
                  "(re-protection) or from %.1f s (failover)",
                  stop_s, io / 1000, hung / 1000, (io - 500) / 1000, (io + 1000) / 1000, (hung - 2000) / 1000,
                  (hung + margin) / 1000);
  }
  return InvalidArgument(buf);
}

Result<Outcome> StopAgentOutcome(const ClusterConfig& c, double stop_s) {
  const Outcome o = Expected(Fault::kStopAgent, c.lease_ms, stop_s);
  const double ms = stop_s * 1000, lease = static_cast<double>(c.lease_ms);
  if (c.lease_ms == 0 || o == Outcome::kFailover || ms + 500 <= lease) return o;
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "stop-agent: a stop of %.1f s could end either way (its VMMs fence themselves once lease_ms %.1f s runs "
                "out, and the VM may go on where it was or at a new generation): choose up to %.1f s (nothing) or "
                "more than %.1f s (failover)",
                stop_s, lease / 1000, (lease - 500) / 1000, (lease + kHungAgentMarginMs) / 1000);
  return InvalidArgument(buf);
}

bool TargetsVm(Fault f) {
  return f == Fault::kKillVm || f == Fault::kKillStandby || f == Fault::kCutReplication || f == Fault::kStopVm;
}

bool DrillFailed(const json& card) { return !card.value("ok", false); }

}  // namespace ferry::ha
