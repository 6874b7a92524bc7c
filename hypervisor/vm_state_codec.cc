#include "ferry/hypervisor/vm_state_codec.h"

#include "ferry/base/coding.h"
#include "snapshot_format.h"

namespace ferry::hypervisor {

std::vector<uint8_t> EncodeVmConfig(const VmConfig& config) { return snapshot::EncodeConfig(config); }
Status DecodeVmConfig(std::span<const uint8_t> bytes, VmConfig* config) { return snapshot::DecodeConfig(bytes, config); }

// Layout: u32 length + config payload, u32 vCPU count, each vCPU's state, u32 length +
// devices payload (the same payloads as the snapshot's sections).
std::vector<uint8_t> EncodeVmState(const VmState& state) {
  Encoder e;
  auto config = snapshot::EncodeConfig(state.config);
  e.PutU32(static_cast<uint32_t>(config.size()));
  e.PutBytes(config);
  e.PutU32(static_cast<uint32_t>(state.vcpus.size()));
  for (const auto& v : state.vcpus) EncodeVcpuState(v, e);
  auto devices = snapshot::EncodeDevices(state);
  e.PutU32(static_cast<uint32_t>(devices.size()));
  e.PutBytes(devices);
  return e.Take();
}

Status DecodeVmState(std::span<const uint8_t> bytes, VmState* state) {
  *state = VmState{};
  Decoder d(bytes);
  uint32_t len = 0, count = 0;
  std::span<const uint8_t> part;
  if (!d.GetU32(&len) || !d.GetBytes(len, &part)) return Corrupt("VM state: truncated config");
  FERRY_RETURN_IF_ERROR(snapshot::DecodeConfig(part, &state->config));
  if (!d.GetU32(&count) || count != state->config.vcpus) return Corrupt("VM state: vCPU count does not match the config");
  for (uint32_t i = 0; i < count; ++i) {
    VcpuState v;
    FERRY_RETURN_IF_ERROR(DecodeVcpuState(d, &v));
    if (v.index != i) return Corrupt("VM state: vCPUs out of order");
    state->vcpus.push_back(std::move(v));
  }
  if (!d.GetU32(&len) || !d.GetBytes(len, &part)) return Corrupt("VM state: truncated devices");
  FERRY_RETURN_IF_ERROR(snapshot::DecodeDevices(part, state));
  if (d.remaining() != 0) return Corrupt("VM state has trailing bytes");
  return Status::Ok();
}

}  // namespace ferry::hypervisor
