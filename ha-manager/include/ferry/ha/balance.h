// Placement: which VMs the cluster's PlacementPolicy (config.h) wants moved, and where.
// PlanBalance() is pure: it reads the claims (where each VM runs) and the load figures each
// agent reports (ClusterState::stats) and returns moves with the reason for each, plus notes
// on what is over its threshold but cannot move. The leader agent (lowest node id in a
// quorate view) sends the moves as `move` messages; `ferry ha balance --dry-run` prints them.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/ha/cluster_state.h"
#include "ferry/ha/config.h"

namespace ferry::ha {

struct PlannedMove {
  std::string vm, from, to;
  std::string why;  // e.g. "h0 CPU 180% of 2 cpus > 60%: kv1 (90%) to h1 (45% after)"
};

struct BalancePlan {
  std::vector<PlannedMove> moves;
  std::vector<std::string> notes;  // violations nothing can fix now, and why
  nlohmann::json ToJson() const;
};

// now_ms: the agent's clock, against which VMs placed less than policy.settle_s ago stay.
BalancePlan PlanBalance(const ClusterConfig& config, const ClusterState& state, uint64_t now_ms);

}  // namespace ferry::ha
