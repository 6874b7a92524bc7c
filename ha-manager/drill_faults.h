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
Status CutPort(const HostConfig& h, const std::string& proto, uint16_t port);
Status HealPort(const HostConfig& h, const std::string& proto, uint16_t port);
Status Signal(pid_t pid, int sig);

}  // namespace ferry::ha
