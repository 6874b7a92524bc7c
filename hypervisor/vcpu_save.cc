// Vcpu::SaveState / RestoreState: the KVM ioctls behind VcpuState.
#include <sys/ioctl.h>

#include <cerrno>

#include "vcpu.h"

namespace ferry::hypervisor {

Result<VcpuState> Vcpu::SaveState() const {
  VcpuState s;
  s.index = index_;
  FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_GET_REGS, &s.regs, "KVM_GET_REGS"));
  FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_GET_SREGS, &s.sregs, "KVM_GET_SREGS"));
  kvm_xsave xsave{};
  if (sys::Ioctl(fd(), sys::kGetXsave, &xsave, "KVM_GET_XSAVE").ok()) {
    s.xsave.assign(std::begin(xsave.region), std::end(xsave.region));
    s.parts |= VcpuState::kXsave;
  } else {
    FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_GET_FPU, &s.fpu, "KVM_GET_FPU"));
    s.parts |= VcpuState::kFpu;
  }
  if (sys::Ioctl(fd(), KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS").ok()) s.parts |= VcpuState::kXcrs;
  if (sys::Ioctl(fd(), KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS").ok()) s.parts |= VcpuState::kEvents;
  if (sys::Ioctl(fd(), KVM_GET_DEBUGREGS, &s.debugregs, "KVM_GET_DEBUGREGS").ok()) s.parts |= VcpuState::kDebugRegs;
  kvm_mp_state mp{};
  if (sys::Ioctl(fd(), KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE").ok()) s.mp_state = mp.mp_state;

  std::vector<sys::Msr> msrs;
  for (uint32_t index : msr_indices_) msrs.push_back({index, 0});
  FERRY_RETURN_IF_ERROR(sys::GetMsrs(fd(), msrs));
  for (const auto& m : msrs) s.msrs.emplace_back(m.index, m.value);
  return s;
}

Status Vcpu::RestoreState(const VcpuState& state) {
  VcpuState s = state;  // KVM's setters take non-const pointers
  FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_SREGS, &s.sregs, "KVM_SET_SREGS"));
  if (s.parts & VcpuState::kXcrs) FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_XCRS, &s.xcrs, "KVM_SET_XCRS"));
  if (s.parts & VcpuState::kXsave) {
    kvm_xsave xsave{};
    std::copy(s.xsave.begin(), s.xsave.begin() + std::min<size_t>(s.xsave.size(), 1024), xsave.region);
    FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), sys::kSetXsave, &xsave, "KVM_SET_XSAVE"));
  } else if (s.parts & VcpuState::kFpu) {
    FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_FPU, &s.fpu, "KVM_SET_FPU"));
  }
  FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_REGS, &s.regs, "KVM_SET_REGS"));
  std::vector<sys::Msr> msrs;
  for (auto [index, value] : s.msrs) msrs.push_back({index, value});
  FERRY_RETURN_IF_ERROR(sys::SetMsrs(fd(), msrs));
  if (s.parts & VcpuState::kEvents) {
    FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_VCPU_EVENTS, &s.events, "KVM_SET_VCPU_EVENTS"));
  }
  if (s.parts & VcpuState::kDebugRegs) {
    FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_DEBUGREGS, &s.debugregs, "KVM_SET_DEBUGREGS"));
  }
  kvm_mp_state mp{s.mp_state};
  (void)sys::Ioctl(fd(), KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");  // absent without an irqchip
  return Status::Ok();
}

}  // namespace ferry::hypervisor
