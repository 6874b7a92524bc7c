// VmState as bytes: everything but RAM (config, every vCPU, devices), encoded field by field
// with the snapshot format's own encoders, for streams that carry a VM's state (migration,
// later replication). No framing or checksum: the carrier provides both. Pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::hypervisor {

std::vector<uint8_t> EncodeVmConfig(const VmConfig& config);
// Validates memory size (2 MiB multiple, <= 64 GiB) and vCPU count.
Status DecodeVmConfig(std::span<const uint8_t> bytes, VmConfig* config);

std::vector<uint8_t> EncodeVmState(const VmState& state);
// Validates every field (memory size, vCPU count and order, register blocks, devices) and
// refuses trailing bytes.
Status DecodeVmState(std::span<const uint8_t> bytes, VmState* state);

}  // namespace ferry::hypervisor
