// The device flags shared by `ferry run`, `ferry restore` and `ferry incoming`:
//   --disk IMAGE                         a raw disk image (shared storage: the same path on every host)
//   --net TAP[,bridge=BR][,mac=MAC]      a NIC on TAP (created if absent), enslaved to BR
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/device_state.h"

namespace ferry::cli {

struct DeviceFlags {
  std::string disk;
  std::string net;
  // What the flags replace in a saved config (restore, incoming); mac= is refused there.
  Result<hypervisor::DeviceOverrides> Overrides() const;
};

// Registers --disk and --net on `cmd`.
void AddDeviceFlags(CLI::App* cmd, DeviceFlags* flags);
// Parses "TAP[,bridge=BR][,mac=MAC]" into `config` (mac only when `allow_mac`).
Status ParseNetSpec(const std::string& spec, bool allow_mac, hypervisor::DeviceConfig* config);

}  // namespace ferry::cli
