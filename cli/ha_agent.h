// The HA agent (`ferry ha agent`): one per host, in the host's network namespace next to its
// Corosync. It joins the cluster's process group (ha-manager's Membership), keeps a
// ClusterState from the group's messages, and carries out Decide()'s actions on this host:
// it starts VMMs (`ferry run`) and standbys (`ferry standby`) as its children, and drives
// them through their JSON APIs (replicate, promote, handover, fence). Its own API
// (HOSTDIR/agent.sock) serves `status` and `evacuate` to `ferry ha` and `ferry drill`.
//
// The VMs are the agent's children and die with it (PR_SET_PDEATHSIG): an agent that dies is
// a host that failed, and the cluster fails its VMs over.
#pragma once

#include <string>

#include "ferry/ha/config.h"

namespace ferry::cli {

// Runs until SIGINT/SIGTERM; returns the exit code. A Corosync that is not up yet (an agent
// started next to it at boot) is waited for up to wait_corosync_s, then it is an error.
int RunHaAgent(const ha::ClusterConfig& config, const std::string& config_path, double wait_corosync_s);

// The agent API's socket for a host.
std::string AgentSocket(const ha::HostConfig& host);

}  // namespace ferry::cli
