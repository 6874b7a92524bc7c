#include "vcpu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "ferry/base/guard.h"
#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {
namespace {

const int kKickSignal = SIGUSR1;
thread_local kvm_run* tls_run = nullptr;

void OnKick(int) {
  // Async-signal-safe: a plain store that KVM polls on entry (KVM_CAP_IMMEDIATE_EXIT).
  if (tls_run) tls_run->immediate_exit = 1;
}

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = OnKick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kKickSignal, &sa, nullptr);
  });
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<std::unique_ptr<Vcpu>> Vcpu::Create(int vm_fd, uint32_t index, size_t run_size,
                                           const std::vector<uint32_t>& msr_indices, VcpuHost* host) {
  FERRY_ASSIGN_OR_RETURN(auto handles, sys::CreateVcpu(vm_fd, static_cast<int>(index), run_size));
  InstallKickHandler();
  return std::unique_ptr<Vcpu>(new Vcpu(index, std::move(handles), run_size, msr_indices, host));
}

Vcpu::~Vcpu() {
  Join();
  sys::UnmapRun(handles_.run, run_size_);
}

Status Vcpu::SetRegisters(const kvm_regs& regs, const kvm_sregs& sregs) {
  kvm_sregs s = sregs;
  kvm_regs r = regs;
  FERRY_RETURN_IF_ERROR(sys::Ioctl(fd(), KVM_SET_SREGS, &s, "KVM_SET_SREGS"));
  return sys::Ioctl(fd(), KVM_SET_REGS, &r, "KVM_SET_REGS");
}

void Vcpu::StartThread() {
  thread_ = std::thread([this] {
    // An exception (out of memory serving a device) stops this guest as a crash the API
    // reports, not the VMM with std::terminate.
    Status st = Guarded("vCPU", [this] { RunLoop(); });
    if (!st.ok()) host_->OnCrash(index_, st.message());
  });
  // "vcpu N" in /proc/PID/task/*/comm: benchmarks tell guest CPU time from the VMM's own.
  pthread_setname_np(thread_.native_handle(), ("vcpu " + std::to_string(index_)).c_str());
}

void Vcpu::Kick() {
  if (thread_.joinable()) pthread_kill(thread_.native_handle(), kKickSignal);
}

void Vcpu::Join() {
  if (thread_.joinable()) thread_.join();
}

void Vcpu::RunLoop() {
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
  kvm_run* run = handles_.run;
  tls_run = run;
  // After an I/O exit the instruction completes only on the next KVM_RUN; state must not be
  // saved before that, so parking first re-enters with immediate_exit set.
  bool needs_completion = false;
  for (;;) {
    if (host_->ParkPending()) {
      if (needs_completion) {
        run->immediate_exit = 1;
        ::ioctl(fd(), KVM_RUN, 0);  // completes the pending exit, returns EINTR at once
        needs_completion = false;
      }
      run->immediate_exit = 0;
      if (!host_->Park(index_)) break;
      continue;
    }
    int r = ::ioctl(fd(), KVM_RUN, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        run->immediate_exit = 0;
        needs_completion = false;
        host_->Throttle(index_);
        continue;
      }
      host_->OnCrash(index_, std::string("KVM_RUN failed: ") + std::strerror(errno));
      break;
    }
    needs_completion = run->exit_reason == KVM_EXIT_IO;
    if (!DispatchExit()) break;
  }
  tls_run = nullptr;
}

bool Vcpu::DispatchExit() {
  kvm_run* run = handles_.run;
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      if (run->io.port == FERRY_PORT_HYPERCALL && run->io.direction == KVM_EXIT_IO_OUT &&
          run->io.size == 4 && run->io.count == 1) {
        uint32_t nr = data[0] | (data[1] << 8) | (data[2] << 16) | (uint32_t{data[3]} << 24);
        return host_->OnHypercall(index_, nr) == VcpuHost::Action::kContinue;
      }
      // Any other port: reads see an empty bus, writes are dropped (as on real hardware).
      if (run->io.direction == KVM_EXIT_IO_IN) std::memset(data, 0xff, size_t{run->io.size} * run->io.count);
      return true;
    }
    case KVM_EXIT_DIRTY_RING_FULL:
      if (host_->OnDirtyRingFull(index_)) return true;
      host_->OnCrash(index_, "dirty ring full and could not be reaped");
      return false;
    case KVM_EXIT_MMIO:
      host_->OnCrash(index_, "guest touched unbacked address " + Hex(run->mmio.phys_addr) + DescribeRip());
      return false;
    case KVM_EXIT_HLT:
      host_->OnCrash(index_, "guest executed hlt" + DescribeRip());
      return false;
    case KVM_EXIT_SHUTDOWN:
      host_->OnCrash(index_, "guest triple fault (an exception at CPL3; guests take no exceptions)" + DescribeRip());
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      host_->OnCrash(index_, "KVM entry failed, hardware reason " + Hex(run->fail_entry.hardware_entry_failure_reason));
      return false;
    case KVM_EXIT_INTERNAL_ERROR:
      host_->OnCrash(index_, "KVM internal error, suberror " + std::to_string(run->internal.suberror) + DescribeRip());
      return false;
    default:
      host_->OnCrash(index_, "unexpected KVM exit reason " + std::to_string(run->exit_reason) + DescribeRip());
      return false;
  }
}

std::string Vcpu::DescribeRip() const {
  kvm_regs regs{};
  if (!sys::Ioctl(fd(), KVM_GET_REGS, &regs, "KVM_GET_REGS").ok()) return "";
  return " at rip=" + Hex(regs.rip) + " rsp=" + Hex(regs.rsp);
}

}  // namespace ferry::hypervisor
