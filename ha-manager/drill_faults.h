// The fault primitives of drills (drill.h): private to ha-manager.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "ferry/base/status.h"
#include "ferry/ha/config.h"

namespace ferry::ha {

inline constexpr uint16_t kCorosyncPort = 5405;  // knet's default, as test clusters run it

Result<pid_t> AgentPid(const HostConfig& h);
Result<pid_t> VmmPid(const HostConfig& h, const std::string& vm);
// SIGKILLs every process in the host's namespace and cuts its uplink.
Status KillHost(const HostConfig& h);
Status LinkDown(const HostConfig& h);
Status LinkUp(const HostConfig& h);
// Cuts (heals) one path: the host's packets of `proto` ("tcp", "udp") to `port` on any other
// host are dropped.
// `to` (an address, or "" for every host): only packets to it are cut, so a cut replication
// path leaves the way to a third host open, as a broken path to one standby would.
Status CutPort(const HostConfig& h, const std::string& proto, uint16_t port, const std::string& to = "");
Status HealPort(const HostConfig& h, const std::string& proto, uint16_t port, const std::string& to = "");
Status Signal(pid_t pid, int sig);
// The host's corosync process (its netns's process named "corosync").
Result<pid_t> CorosyncPid(const HostConfig& h);
// Runs h.corosync_start detached (its own session, output to DIR/corosync-start.log), without
// waiting: a foreground corosync runs on after the drill.
Status StartCorosync(const HostConfig& h);

}  // namespace ferry::ha
