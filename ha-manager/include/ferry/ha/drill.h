// Drills: a fault injected on purpose into a running HA cluster, with a load client on the
// VM's service, and a scorecard (what an operator runs to trust the cluster, and what the
// cluster tests run). `ferry drill` and the console are thin over RunDrill().
//
// Each fault has an expected outcome:
//   failover  - the VM must run again elsewhere at a newer generation: kill-host,
//               partition-host, kill-vm, kill-agent (its VMMs die with it), cut-corosync,
//               kill-host-mid-move, restart-corosync (its Corosync killed, started again
//               with the host's corosync_start after heal_after_s: its agent stays up, fences,
//               and rejoins as the backup);
//   reprotect - the VM must keep running where it is and be protected again by some standby:
//               kill-standby, cut-replication;
//   nothing   - the VM must keep running where it is, at the same generation: stop-agent
//               (SIGSTOP for stop_s, then SIGCONT).
//   stop-vm (the VM's primary VMM SIGSTOPped for stop_s, then SIGCONT: a hung VMM) depends on
//   how long: StopVmOutcome().
// Every card reports acknowledged writes lost and whether two primaries ever served; a card
// with either, or without its expected outcome, is a failed drill.
//
// Host faults act on test clusters (the config's netns/uplink): processes are found with
// `ip netns pids`, links cut with `ip link`, single paths cut with a policy-routing blackhole
// for one destination port (no netfilter needed). One caller thread; RunDrill blocks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/ha/config.h"

namespace ferry::ha {

enum class Fault : uint8_t {
  kKillHost,
  kPartitionHost,
  kKillVm,
  kKillAgent,
  kStopAgent,
  kCutReplication,
  kCutCorosync,
  kKillStandby,
  kKillHostMidMove,
  kRestartCorosync,
  kStopVm,
};
inline constexpr int kFaultCount = static_cast<int>(Fault::kStopVm) + 1;

enum class Outcome : uint8_t { kFailover, kReprotect, kNothing };

const char* FaultName(Fault f);  // "kill-host", ... (the CLI flag without its dashes)
std::optional<Fault> ParseFault(std::string_view name);
Outcome Expected(Fault f);
// With the cluster's watchdog lease and a stop-agent's length: a hung agent's VM is failed
// over once the lease ran out after it fell silent (cluster_state.h, the hung-agent rule),
// so an agent stopped longer than the lease plus kHungAgentMarginMs expects a failover.
inline constexpr uint64_t kHungAgentMarginMs = 3000;
Outcome Expected(Fault f, uint64_t lease_ms, double stop_s);
// A primary VMM stopped for stop_s: within the standby's io_timeout_ms nothing happens; past it
// by a second the standby gives up on it and the owner re-protects the VM (reprotect); past
// hung_vmm_ms plus kHungAgentMarginMs its agent has killed it as hung and the VM failed over.
// A stop nearer a bound than that could end either way, and is refused (invalid_argument).
Result<Outcome> StopVmOutcome(const ClusterConfig& c, double stop_s);
// An agent stopped for stop_s: without a lease, nothing. With one, nothing while its VMMs'
// lease holds (up to lease_ms - 0.5 s), a failover from lease_ms + kHungAgentMarginMs; between,
// its VMMs fenced themselves and it may wake to find the VM where it was or at a new generation,
// so such a stop is refused (invalid_argument), as StopVmOutcome refuses its borderline stops.
Result<Outcome> StopAgentOutcome(const ClusterConfig& c, double stop_s);
const char* OutcomeName(Outcome o);
// Whether the target names a VM (kill-vm, kill-standby, cut-replication, stop-vm) or a host.
bool TargetsVm(Fault f);

struct DrillOptions {
  Fault fault = Fault::kKillHost;
  std::string target;      // a host or a VM (TargetsVm)
  std::string vm;          // the VM whose service is loaded (default: the first on the target host)
  std::string move_to;     // kill-host-mid-move: the move's target (default: a host with no copy)
  double rate = 400;       // client requests per second
  uint32_t keys = 64;
  double heal_after_s = 2;  // partition-host, cut-corosync, cut-replication, restart-corosync: heal this long after
  double stop_s = 10;       // stop-agent, stop-vm: how long the agent or the VMM stays stopped
  double after_s = 0.5;     // kill-host-mid-move: how long after the switch began
  double timeout_s = 30;    // the expected outcome must come by then
  std::string exe;          // the ferry binary (for the load client)
};

// Runs one drill and returns its scorecard (JSON); an error if it could not be run at all
// (bad target, VM not protected, no agent answering). A card carries "ok": false when the
// drill failed (DrillFailed()).
Result<nlohmann::json> RunDrill(const ClusterConfig& config, const DrillOptions& options);
bool DrillFailed(const nlohmann::json& card);

}  // namespace ferry::ha
