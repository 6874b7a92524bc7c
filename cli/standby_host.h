// StandbyHost: the `ferry standby` process around a replication::Standby — serves its API
// (status, promote, stop; after promotion the full VM API on the same socket), turns
// SIGINT/SIGTERM into a clean stop, and after promotion runs the VM like `ferry run`.
// Run() blocks; returns the process exit code.
#pragma once

#include <memory>
#include <string>

#include "ferry/replication/standby.h"

namespace ferry::cli {

int RunStandby(std::unique_ptr<replication::Standby> standby, const std::string& api_path);

}  // namespace ferry::cli
