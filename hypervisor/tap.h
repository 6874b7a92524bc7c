// TAP devices: the host end of the paravirtual NIC. The only place that knows the tun/bridge
// ioctls. A TAP that does not exist is created by opening it and disappears when its last
// file descriptor closes (when the VMM exits), so a crashed VMM leaves nothing behind.
#pragma once

#include <string>

#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::hypervisor {

// Opens (or creates) TAP `name` without packet info, non-blocking; brings it up and, if
// `bridge` is set, enslaves it to that bridge (already enslaved there is fine).
Result<UniqueFd> OpenTap(const std::string& name, const std::string& bridge);

}  // namespace ferry::hypervisor
