#include "vm_core.h"

#include <algorithm>
#include <chrono>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {
namespace {

constexpr auto kPauseTimeout = std::chrono::seconds(5);
constexpr auto kThrottlePeriod = std::chrono::milliseconds(10);

// MSRs a CPL3 long-mode guest can observe or depend on; filtered by what KVM supports.
constexpr uint32_t kWantedMsrs[] = {
    0x174, 0x175, 0x176,                                  // SYSENTER_CS/ESP/EIP
    0x277,                                                // PAT
    0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,       // STAR LSTAR CSTAR SFMASK
    0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103,       // FS/GS/KERNEL_GS base, TSC_AUX
};

}  // namespace

const char* RunStateName(RunState s) {
  switch (s) {
    case RunState::kCreated: return "created";
    case RunState::kRunning: return "running";
    case RunState::kPaused: return "paused";
    case RunState::kShutdown: return "shutdown";
    case RunState::kCrashed: return "crashed";
    case RunState::kStopped: return "stopped";
  }
  return "unknown";
}

VmCore::VmCore(Vm* vm, ConsoleSink sink) : vm_(vm), console_(std::move(sink)) {}

VmCore::~VmCore() {
  Stop();
  // A vCPU blocked on a full disk overlay would never be joined; the overlay dies with the
  // VM anyway.
  if (block_) block_->DiscardOverlay();
  JoinAll();
  if (throttle_thread_.joinable()) throttle_thread_.join();
  net_.reset();  // joins the receive thread, which raises events through this object
}

Status VmCore::Init() {
  FERRY_ASSIGN_OR_RETURN(kvm_, sys::OpenKvm());
  GuestMemory& mem = vm_->memory();
  const KvmDirtyLog::Slot slot{kvm_.vm.get(), 0, mem.size(), reinterpret_cast<uint64_t>(mem.host())};
  FERRY_RETURN_IF_ERROR(sys::SetMemorySlot(slot.vm_fd, slot.guest_phys_addr, slot.size, slot.host_addr, 0));
  const uint32_t ring_entries = vm_->config().dirty_ring_entries;
  if (ring_entries) FERRY_RETURN_IF_ERROR(KvmDirtyLog::EnableRingCapability(kvm_.vm.get(), ring_entries));
  FERRY_ASSIGN_OR_RETURN(auto supported, sys::MsrIndexList(kvm_.kvm.get()));
  std::vector<uint32_t> msrs;
  for (uint32_t m : kWantedMsrs) {
    if (std::find(supported.begin(), supported.end(), m) != supported.end()) msrs.push_back(m);
  }
  for (uint32_t i = 0; i < vm_->config().vcpus; ++i) {
    FERRY_ASSIGN_OR_RETURN(auto vcpu, Vcpu::Create(kvm_.vm.get(), i, kvm_.run_size, msrs, this));
    vcpus_.push_back(std::move(vcpu));
  }
  std::vector<int> vcpu_fds;
  for (auto& v : vcpus_) vcpu_fds.push_back(v->fd());
  FERRY_ASSIGN_OR_RETURN(dirty_log_, KvmDirtyLog::Create(slot, vcpu_fds, ring_entries));
  throttle_pct_ = std::make_unique<std::atomic<uint32_t>[]>(vcpus_.size());
  return OpenDevices();
}

Status VmCore::Start() {
  std::lock_guard lock(mu_);
  if (state_ != RunState::kCreated) return InvalidArgument("VM already started");
  state_ = RunState::kRunning;
  threads_alive_ = static_cast<uint32_t>(vcpus_.size());
  for (auto& v : vcpus_) v->StartThread();
  if (net_) {
    net_->Start();
    if (announce_on_start_) net_->Announce();  // the guest moved here: tell the switches
  }
  return Status::Ok();
}

void VmCore::UpdateParkPendingLocked() {
  park_pending_.store(pause_requested_ || stopping_, std::memory_order_release);
}

void VmCore::KickAll() {
  for (auto& v : vcpus_) v->Kick();
}

Result<PauseStats> VmCore::Pause() {
  uint64_t t0 = MonotonicNs();
  std::unique_lock lock(mu_);
  if (state_ == RunState::kPaused) return PauseStats{};
  if (state_ != RunState::kRunning) return InvalidArgument(std::string("cannot pause a VM that is ") + RunStateName(state_));
  pause_requested_ = true;
  UpdateParkPendingLocked();
  // Kicks go out under mu_: threads cannot be joined meanwhile (joining needs stopping_).
  KickAll();
  cv_.notify_all();  // wakes vCPUs blocked in the wait-for-event hypercall
  bool ok = cv_.wait_for(lock, kPauseTimeout, [&] { return parked_ == threads_alive_ || stopping_; });
  if (stopping_) return Status(ErrorCode::kAborted, "the VM stopped while pausing");
  if (!ok) {
    pause_requested_ = false;
    UpdateParkPendingLocked();
    cv_.notify_all();
    return Timeout("vCPUs did not pause within 5 s");
  }
  // Under mu_, so a Resume from another thread cannot slip in before the NIC is held and
  // leave it held while the vCPUs run (no device path takes mu_ while holding its own lock).
  QuiesceDevices();
  state_ = RunState::kPaused;
  return PauseStats{MonotonicNs() - t0};
}

Status VmCore::Resume() {
  std::lock_guard lock(mu_);
  if (state_ == RunState::kRunning) return Status::Ok();
  if (state_ != RunState::kPaused) return InvalidArgument(std::string("cannot resume a VM that is ") + RunStateName(state_));
  pause_requested_ = false;
  UpdateParkPendingLocked();
  state_ = RunState::kRunning;
  cv_.notify_all();
  if (net_) net_->Release();
  return Status::Ok();
}

bool VmCore::Park(uint32_t) {
  std::unique_lock lock(mu_);
  ++parked_;
  cv_.notify_all();
  cv_.wait(lock, [&] { return !pause_requested_ || stopping_; });
  --parked_;
  return !stopping_;
}

Result<VmState> VmCore::SaveState() {
  {
    std::lock_guard lock(mu_);
    if (state_ != RunState::kPaused && state_ != RunState::kCreated) {
      return InvalidArgument("the VM must be paused to save its state");
    }
  }
  VmState s;
  s.config = vm_->config();
  for (auto& v : vcpus_) {
    FERRY_ASSIGN_OR_RETURN(auto vs, v->SaveState());
    s.vcpus.push_back(std::move(vs));
  }
  s.console = console_.Save();
  s.clock = clock_.Save();
  if (block_) s.block = block_->Save();
  if (net_) s.net = net_->Save();
  s.guest_report = LastReport().text;
  return s;
}

void VmCore::FinishLocked(RunState state, int exit_code, const std::string& reason) {
  if (!stopping_) {
    stopping_ = true;
    state_ = state;
    exit_ = VmExit{state, exit_code, reason};
    UpdateParkPendingLocked();
    KickAll();
  }
  cv_.notify_all();
}

void VmCore::Stop() {
  std::lock_guard lock(mu_);
  if (state_ == RunState::kCreated) {
    stopping_ = true;
    state_ = exit_.state = RunState::kStopped;
    return;
  }
  FinishLocked(RunState::kStopped, 0, "stopped by the VMM");
}

void VmCore::OnCrash(uint32_t index, const std::string& reason) {
  std::string msg = "vCPU " + std::to_string(index) + ": " + reason;
  FERRY_LOG_ERROR("guest crashed: %s", msg.c_str());
  std::lock_guard lock(mu_);
  FinishLocked(RunState::kCrashed, -1, msg);
}

uint64_t VmCore::BumpEvent(bool verify) {
  auto* page = reinterpret_cast<ferry_shared_page*>(vm_->memory().host() + FERRY_GPA_SHARED);
  std::lock_guard lock(mu_);
  uint64_t value = std::atomic_ref<uint64_t>(verify ? page->verify_seq : page->stop_seq).fetch_add(1) + 1;
  vm_->memory().MarkDirty(FERRY_GPA_SHARED, sizeof(ferry_shared_page));
  cv_.notify_all();
  return value;
}

void VmCore::RaiseIrq() {
  auto* page = reinterpret_cast<ferry_shared_page*>(vm_->memory().host() + FERRY_GPA_SHARED);
  std::lock_guard lock(mu_);
  std::atomic_ref<uint64_t>(page->irq_seq).fetch_add(1);
  vm_->memory().MarkDirty(FERRY_GPA_SHARED, sizeof(ferry_shared_page));
  cv_.notify_all();
}

uint64_t VmCore::WaitForEvent(uint32_t, uint64_t timeout_ns, uint64_t seen_events) {
  auto* page = reinterpret_cast<ferry_shared_page*>(vm_->memory().host() + FERRY_GPA_SHARED);
  auto current = [&] {
    return std::atomic_ref<uint64_t>(page->verify_seq).load() + std::atomic_ref<uint64_t>(page->stop_seq).load() +
           std::atomic_ref<uint64_t>(page->irq_seq).load();
  };
  std::unique_lock lock(mu_);
  timeout_ns = std::min<uint64_t>(timeout_ns, 10'000'000'000ull);
  cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
               [&] { return current() != seen_events || pause_requested_ || stopping_; });
  return current() != seen_events ? 1 : 0;
}

void VmCore::JoinAll() {
  std::lock_guard join_lock(join_mu_);
  for (auto& v : vcpus_) v->Join();
}

VmExit VmCore::WaitForExit() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return stopping_; });
  }
  JoinAll();
  std::lock_guard lock(mu_);
  return exit_;
}

bool VmCore::WaitForExitFor(uint64_t timeout_ms, VmExit* exit) {
  {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return stopping_; })) return false;
  }
  *exit = WaitForExit();
  return true;
}

RunState VmCore::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

GuestReport VmCore::LastReport() const {
  std::lock_guard lock(mu_);
  return report_;
}

Status VmCore::SetThrottle(int index, uint32_t percent) {
  if (percent > 99) return InvalidArgument("throttle must be 0..99 percent");
  if (index >= static_cast<int>(vcpus_.size())) return InvalidArgument("no vCPU " + std::to_string(index));
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    if (index < 0 || static_cast<size_t>(index) == i) throttle_pct_[i] = percent;
  }
  std::lock_guard lock(mu_);
  if (percent > 0 && !throttle_thread_.joinable() && !stopping_) {
    throttle_thread_ = std::thread([this] {
      Status st = Guarded("throttle", [this] { ThrottleLoop(); });
      if (!st.ok()) FERRY_LOG_ERROR("%s: the guest is no longer throttled", st.message().c_str());
    });
  }
  return Status::Ok();
}

uint32_t VmCore::throttle(uint32_t index) const { return index < vcpus_.size() ? throttle_pct_[index].load() : 0; }

// Every period, kicks each throttled vCPU out of KVM_RUN; the vCPU thread then sleeps its
// share of the period in Throttle(). Exits when the VM stops.
void VmCore::ThrottleLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, kThrottlePeriod, [&] { return stopping_; });
    if (stopping_ || pause_requested_) continue;
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      if (throttle_pct_[i].load(std::memory_order_relaxed)) vcpus_[i]->Kick();
    }
  }
}

void VmCore::Throttle(uint32_t index) {
  uint32_t pct = throttle_pct_[index].load(std::memory_order_relaxed);
  if (pct == 0) return;
  auto hold = std::chrono::duration_cast<std::chrono::nanoseconds>(kThrottlePeriod) * pct / 100;
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, hold, [&] { return pause_requested_ || stopping_; });
}

bool VmCore::OnDirtyRingFull(uint32_t index) {
  Status st = dirty_log_->OnRingFull(index);
  if (!st.ok()) FERRY_LOG_ERROR("vCPU %u: %s", index, st.message().c_str());
  return st.ok();
}

}  // namespace ferry::hypervisor
