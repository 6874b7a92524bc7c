// VcpuState: everything KVM holds for one vCPU that a snapshot or a migration must carry
// (general and special registers, FPU/XSAVE, XCRs, MSRs, pending events, debug registers,
// MP state), plus its encoding. The encoding is field by field, little-endian, so a state
// saved by one build or host decodes on another; decoding validates every count.
// A plain value type: thread-compatible.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ferry/base/coding.h"
#include "ferry/base/status.h"

namespace ferry::hypervisor {

struct VcpuState {
  // Which optional parts were captured (the kernel may lack some of them).
  enum Part : uint32_t { kXsave = 1, kFpu = 2, kXcrs = 4, kEvents = 8, kDebugRegs = 16 };
  uint32_t index = 0;
  uint32_t parts = 0;
  kvm_regs regs{};
  kvm_sregs sregs{};
  std::vector<uint32_t> xsave;  // XSAVE area (KVM_GET_XSAVE), 1024 words
  kvm_fpu fpu{};                // only when XSAVE is unavailable
  kvm_xcrs xcrs{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  uint32_t mp_state = 0;
  std::vector<std::pair<uint32_t, uint64_t>> msrs;
};

void EncodeVcpuState(const VcpuState& s, Encoder& e);
Status DecodeVcpuState(Decoder& d, VcpuState* s);

}  // namespace ferry::hypervisor
