#include "ferry/hypervisor/vm.h"

#include <chrono>
#include <thread>

#include "boot_layout.h"
#include "ferry/base/clock.h"
#include "ferry/base/units.h"
#include "ferry/hypervisor/elf_loader.h"
#include "ferry/hypervisor/guest_abi.h"
#include "vm_core.h"

namespace ferry::hypervisor {

Vm::Vm(VmConfig config, GuestMemory memory, ConsoleSink sink)
    : config_(std::move(config)), memory_(std::move(memory)), created_ns_(MonotonicNs()),
      core_(std::make_unique<VmCore>(this, std::move(sink))) {}

Vm::~Vm() { core_.reset(); }  // vCPU threads stop before memory goes

Result<std::unique_ptr<Vm>> Vm::Boot(const VmConfig& config, ConsoleSink sink) {
  if (config.vcpus == 0 || config.vcpus > FERRY_MAX_VCPUS) {
    return InvalidArgument("--vcpus must be between 1 and " + std::to_string(FERRY_MAX_VCPUS));
  }
  if (config.mem_bytes < MinimumMemory(config.vcpus)) {
    return InvalidArgument("--mem must be at least " + std::to_string(MinimumMemory(config.vcpus) >> 20) + "M");
  }
  FERRY_ASSIGN_OR_RETURN(auto memory, GuestMemory::Create(config.mem_bytes));
  FERRY_ASSIGN_OR_RETURN(auto image, LoadElfFile(config.guest_path, memory));
  BootParams params{config.mem_bytes, config.vcpus, config.guest_args, image.entry, image.image_end};
  FERRY_RETURN_IF_ERROR(WriteBootStructures(params, memory));

  VmConfig effective = config;
  if (!effective.devices.tap.empty() && effective.devices.mac == std::array<uint8_t, 6>{}) {
    effective.devices.mac = GenerateMac();  // chosen once; snapshots and migrations keep it
  }
  std::unique_ptr<Vm> vm(new Vm(effective, std::move(memory), std::move(sink)));
  FERRY_RETURN_IF_ERROR(vm->core_->Init());
  kvm_sregs sregs{};
  FERRY_RETURN_IF_ERROR(sys::Ioctl(vm->core_->vcpu(0).fd(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS"));
  InitialSregs(&sregs);
  for (uint32_t i = 0; i < config.vcpus; ++i) {
    kvm_regs regs;
    InitialRegs(params, i, &regs);
    FERRY_RETURN_IF_ERROR(vm->core_->vcpu(i).SetRegisters(regs, sregs));
  }
  FERRY_RETURN_IF_ERROR(vm->core_->clock().Publish(vm->memory_, vm->core_->vcpu(0).fd(), 0));
  return vm;
}

Result<std::unique_ptr<Vm>> Vm::Prepare(const VmConfig& config, GuestMemory memory, ConsoleSink sink) {
  if (config.mem_bytes != memory.size()) return InvalidArgument("saved memory size does not match the VM config");
  if (config.vcpus == 0 || config.vcpus > FERRY_MAX_VCPUS) return InvalidArgument("invalid vCPU count in the VM config");
  std::unique_ptr<Vm> vm(new Vm(config, std::move(memory), std::move(sink)));
  FERRY_RETURN_IF_ERROR(vm->core_->Init());
  return vm;
}

Status Vm::LoadState(const VmState& state) {
  if (state.config.mem_bytes != config_.mem_bytes || state.config.vcpus != config_.vcpus) {
    return InvalidArgument("the saved VM's memory size or vCPU count does not match the prepared VM");
  }
  if (state.vcpus.size() != config_.vcpus) return InvalidArgument("saved vCPU count does not match the VM config");
  if (core_->state() != RunState::kCreated) return InvalidArgument("state can only be loaded before the VM starts");
  for (const VcpuState& vs : state.vcpus) {
    if (vs.index >= config_.vcpus) return InvalidArgument("saved vCPU index out of range");
    FERRY_RETURN_IF_ERROR(core_->vcpu(vs.index).RestoreState(vs).Annotate("vCPU " + std::to_string(vs.index)));
  }
  FERRY_RETURN_IF_ERROR(core_->RestoreDevices(state));
  core_->console().Restore(state.console);
  if (!state.guest_report.empty()) core_->StoreReport(state.guest_report);
  return core_->clock().Publish(memory_, core_->vcpu(0).fd(), PvClock::ResumeNs(state.clock));
}

Result<std::unique_ptr<Vm>> Vm::FromState(const VmState& state, GuestMemory memory, ConsoleSink sink) {
  FERRY_ASSIGN_OR_RETURN(auto vm, Prepare(state.config, std::move(memory), std::move(sink)));
  FERRY_RETURN_IF_ERROR(vm->LoadState(state));
  return vm;
}

Status Vm::Start() {
  std::lock_guard lock(gate_mu_);
  if (!sealed_why_.empty()) return Status(ErrorCode::kRefused, "the VM is sealed: " + sealed_why_);
  return core_->Start();
}
Result<PauseStats> Vm::Pause() { return core_->Pause(); }
Status Vm::Resume() {
  std::lock_guard lock(gate_mu_);
  if (!sealed_why_.empty()) return Status(ErrorCode::kRefused, "the VM is sealed: " + sealed_why_);
  return core_->Resume();
}
Result<PauseStats> Vm::Seal(const std::string& why) {
  std::lock_guard lock(gate_mu_);
  sealed_why_ = why.empty() ? "sealed" : why;
  if (core_->state() == RunState::kRunning) return core_->Pause();
  return PauseStats{};
}
bool Vm::SealForHandOff(const std::string& why) {
  std::lock_guard lock(gate_mu_);
  if (!sealed_why_.empty()) return false;
  sealed_why_ = why.empty() ? "sealed" : why;
  return true;
}
void Vm::Unseal() {
  std::lock_guard lock(gate_mu_);
  sealed_why_.clear();
}
bool Vm::sealed() const {
  std::lock_guard lock(gate_mu_);
  return !sealed_why_.empty();
}
Result<VmState> Vm::SaveState() { return core_->SaveState(); }
void Vm::Stop() { core_->Stop(); }
uint64_t Vm::RequestVerify() { return core_->BumpEvent(true); }
void Vm::RequestGuestStop() { core_->BumpEvent(false); }
VmExit Vm::WaitForExit() { return core_->WaitForExit(); }
bool Vm::WaitForExitFor(uint64_t timeout_ms, VmExit* exit) { return core_->WaitForExitFor(timeout_ms, exit); }
RunState Vm::state() const { return core_->state(); }
GuestReport Vm::LastReport() const { return core_->LastReport(); }
DeviceReport Vm::Devices() const { return core_->Devices(); }
std::string Vm::LastConsoleLine() const { return core_->console().LastLine(); }
Result<Verification> AwaitVerification(Vm& vm, uint64_t target, uint64_t timeout_ms) {
  const uint64_t deadline = MonotonicNs() + timeout_ms * 1000000;
  while (MonotonicNs() < deadline) {
    GuestReport r = vm.LastReport();
    auto seq = r.fields.find("verify_seq");
    if (seq == r.fields.end()) {
      if (r.seq != 0) return Unsupported("the guest does not report verification (is it memcheck?)");
    } else if (uint64_t reported = 0; !ParseU64(seq->second, &reported)) {
      // A guest's report is untrusted input: a malformed one fails the verification.
      return Verification{false, std::move(r)};
    } else if (r.fields.count("verify_pages") && reported >= target) {
      bool passed = r.fields["verdict"] == "ok" && r.fields["verify_errors"] == "0";
      return Verification{passed, std::move(r)};
    }
    RunState s = vm.state();
    if (s == RunState::kCrashed || s == RunState::kShutdown || s == RunState::kStopped) {
      return Status(ErrorCode::kAborted, "the guest ended during verification");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Timeout("the guest did not report its verification within " + std::to_string(timeout_ms) + " ms");
}

uint64_t Vm::GuestNs() const { return core_->clock().GuestNs(); }
KvmDirtyLog& Vm::dirty_log() { return core_->dirty_log(); }
Status Vm::SetThrottle(int index, uint32_t percent) { return core_->SetThrottle(index, percent); }
uint32_t Vm::throttle(uint32_t index) const { return core_->throttle(index); }

}  // namespace ferry::hypervisor
