// The hypercall dispatch: what each FERRY_HC_* number does (guest_abi.h).
#include <sstream>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/guest_abi.h"
#include "vm_core.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMaxConsoleWrite = 64 * 1024;
constexpr uint64_t kMaxReport = 4096;

}  // namespace

VcpuHost::Action VmCore::OnHypercall(uint32_t index, uint32_t nr) {
  GuestMemory& mem = vm_->memory();
  uint64_t block_gpa = FERRY_GPA_HCALL + uint64_t{index} * sizeof(ferry_hcall_block);
  auto* block = reinterpret_cast<ferry_hcall_block*>(mem.host() + block_gpa);
  // Copy the arguments once: the guest may change its block while we work.
  const uint64_t args[3] = {block->args[0], block->args[1], block->args[2]};
  const uint64_t a0 = args[0], a1 = args[1];
  uint64_t ret = 0;

  // A guest buffer (address, length), bounded; an out-of-range buffer is a guest bug.
  auto guest_text = [&](uint64_t max, std::string* out) -> bool {
    uint64_t len = std::min(a1, max);
    auto slice = mem.Slice(a0, len);
    if (!slice.ok()) return false;
    out->assign(reinterpret_cast<const char*>(slice->data()), slice->size());
    return true;
  };

  switch (nr) {
    case FERRY_HC_CONSOLE_WRITE: {
      std::string text;
      if (!guest_text(kMaxConsoleWrite, &text)) {
        OnCrash(index, "console write from an address outside guest memory");
        return Action::kStop;
      }
      console_.Write(text);
      break;
    }
    case FERRY_HC_REPORT: {
      std::string text;
      if (!guest_text(kMaxReport, &text)) {
        OnCrash(index, "status report from an address outside guest memory");
        return Action::kStop;
      }
      StoreReport(std::move(text));
      break;
    }
    case FERRY_HC_QUEUE_SETUP:
    case FERRY_HC_QUEUE_NOTIFY:
      ret = QueueHypercall(nr, args);
      break;
    case FERRY_HC_WAIT:
      ret = WaitForEvent(index, a0, a1);
      break;
    case FERRY_HC_SHUTDOWN: {
      std::lock_guard lock(mu_);
      FinishLocked(RunState::kShutdown, static_cast<int>(a0), "guest shut down with code " + std::to_string(a0));
      return Action::kStop;
    }
    case FERRY_HC_PANIC: {
      std::string text;
      if (!guest_text(1024, &text)) text = "(message outside guest memory)";
      FERRY_LOG_ERROR("guest panic on vCPU %u: %s", index, text.c_str());
      std::lock_guard lock(mu_);
      FinishLocked(RunState::kCrashed, -1, "guest panic: " + text);
      return Action::kStop;
    }
    default:
      OnCrash(index, "unknown hypercall " + std::to_string(nr));
      return Action::kStop;
  }
  block->ret = ret;
  mem.MarkDirty(block_gpa, sizeof(ferry_hcall_block));
  return Action::kContinue;
}

void VmCore::StoreReport(std::string text) {
  GuestReport r;
  r.text = text;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    r.fields[word.substr(0, eq)] = word.substr(eq + 1);
  }
  r.host_time_ns = MonotonicNs();
  std::lock_guard lock(mu_);
  r.seq = report_.seq + 1;
  report_ = std::move(r);
  cv_.notify_all();
}

}  // namespace ferry::hypervisor
