// The console's picture of the cluster (GET /api/cluster), built from what the HA agents
// answer: one agent's cluster view (members, quorum, claims, every host's reported load)
// and the events of every agent that answered (migrations, failovers), plus the console's
// own drill results. Pure functions of their inputs; console/README.md documents the JSON.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/ha/config.h"

namespace ferry::console {

// `status`: an agent's answer to {"op":"status"}; `events`: the events of all agents that
// answered (any order); `drills`: finished drills {t_ms, fault, target, scorecard}.
nlohmann::json BuildView(const ha::ClusterConfig& config, const nlohmann::json& status,
                         const std::vector<nlohmann::json>& events, const std::vector<nlohmann::json>& drills);

// A running move's progress from the owner's reported figures (null figures when unknown).
nlohmann::json MoveProgress(const std::string& to, const nlohmann::json& vm_stats, const std::string& standby_host);

// History, oldest first: migrations (handed-over / handover-failed), failovers (promoted,
// with the time from losing the old host to running), drills.
nlohmann::json History(const std::vector<nlohmann::json>& events, const std::vector<nlohmann::json>& drills);

}  // namespace ferry::console
