// Executor: everything an HA agent does to the VMMs of its own host, behind one interface.
// The real one (vmm_executor.h) starts `ferry run` / `ferry standby` processes and drives them
// through their JSON APIs; unit tests use a fake that models VMMs in memory, so every path of
// the agent (agent.h) is tested without Corosync, KVM or processes.
//
// Threads: StartPrimary, StartStandby, Kill, Reap and Probe come from the agent's thread
// only; the long operations (Replicate, StopReplication, Promote, Handover) come from the
// agent's worker threads, at most one at a time per VM, and may run beside the short ones;
// Fence, Unfence and ReleaseOutput come from the agent's thread. An implementation guards
// its own state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/ha/cluster_state.h"
#include "ferry/ha/config.h"

namespace ferry::ha {

// A local VMM or standby process that ended.
struct Ended {
  std::string vm;
  Role role = Role::kPrimary;
  std::string how;  // "exit 0", "signal 9", ...
};

struct PromoteResult {
  uint64_t epoch = 0;
  double promote_ms = 0;
};

struct HandoverResult {
  double downtime_ms = 0;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Boots vm here at `generation` (a new primary's disk starts blank), or holds a standby for
  // it that accepts `generation` and newer (its disk is filled by the initial sync).
  virtual Status StartPrimary(const VmSpec& v, uint64_t generation) = 0;
  // `primary`: the host whose replication it takes (with certificates, the only peer it
  // accepts: another holder of a certificate from the cluster's CA cannot become its primary).
  virtual Status StartStandby(const VmSpec& v, uint64_t generation, const std::string& primary) = 0;
  // Ends vm's local process at once (primary or standby); Reap() reports it.
  virtual void Kill(const std::string& vm) = 0;
  // The local processes that ended since the last call.
  virtual std::vector<Ended> Reap() = 0;
  // A restarted agent's first act (with a watchdog lease, VMMs outlive their agent): takes on
  // the VMMs of this host that still run, as if it had started them; returns their VMs.
  virtual std::vector<std::string> Adopt() { return {}; }
  // This host's instances now, one per local process; one that does not answer yet has no
  // phase (primary) or standby_state (standby). With a watchdog lease, probing renews it,
  // unless `renew_leases` is false (the agent's own messages stopped coming back: the others
  // may count it as hung, so its VMMs must run their leases out).
  virtual std::vector<Instance> Probe(bool renew_leases = true) = 0;
  // The load figures of the last Probe() (LoadSampler::Stats()'s shape).
  virtual nlohmann::json Stats() = 0;

  // Replicates the local primary to `to`'s standby until it is protected (or fails).
  virtual Status Replicate(const VmSpec& v, const HostConfig& to, uint64_t generation) = 0;
  // Ends replication; keep_standby: without telling the standby, and with the output held
  // (the VMM's replicate_stop keep_standby), so the standby's replica stays a fallback.
  virtual Status StopReplication(const std::string& vm, bool keep_standby) = 0;
  virtual Result<PromoteResult> Promote(const std::string& vm, uint64_t generation) = 0;
  virtual Result<HandoverResult> Handover(const std::string& vm, uint64_t generation) = 0;
  virtual Status Fence(const std::string& vm) = 0;
  virtual Status Unfence(const std::string& vm) = 0;
  // The VMM takes `generation` (the owner's claim that disowned its lost standby), then lets the
  // output that replication held go.
  virtual Status ReleaseOutput(const std::string& vm, uint64_t generation) = 0;
};

}  // namespace ferry::ha
