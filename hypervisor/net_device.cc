#include "net_device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/guest_abi.h"
#include "tap.h"

namespace ferry::hypervisor {
namespace {

constexpr size_t kEthHeader = 14;
constexpr uint32_t kMaxDeliverPerWake = 64;
// Output held for unacknowledged checkpoints: a few epochs of a busy NIC.
constexpr uint64_t kOutputBufferBytes = 64ull << 20;
constexpr uint64_t kAnnounceGapsNs[] = {150'000'000, 50'000'000};  // indexed by announcements left - 1

}  // namespace

Result<std::unique_ptr<NetDevice>> NetDevice::Open(const DeviceConfig& config, GuestMemory& memory,
                                                   std::function<void()> raise_irq) {
  if (config.mac == Mac{}) return InvalidArgument("the NIC needs a MAC address");
  FERRY_ASSIGN_OR_RETURN(UniqueFd tap, OpenTap(config.tap, config.bridge));
  return OpenOnFd(std::move(tap), config.mac, memory, std::move(raise_irq));
}

Result<std::unique_ptr<NetDevice>> NetDevice::OpenOnFd(UniqueFd frames, const Mac& mac, GuestMemory& memory,
                                                       std::function<void()> raise_irq) {
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return ErrnoError("eventfd");
  return std::unique_ptr<NetDevice>(new NetDevice(std::move(frames), std::move(wake), mac, memory, std::move(raise_irq)));
}

NetDevice::NetDevice(UniqueFd tap, UniqueFd wake, const Mac& mac, GuestMemory& memory, std::function<void()> raise_irq)
    : tap_(std::move(tap)), wake_(std::move(wake)), mac_(mac), memory_(memory), raise_irq_(std::move(raise_irq)),
      rx_(memory), tx_(memory) {}

NetDevice::~NetDevice() {
  stopping_ = true;
  Wake();
  if (rx_thread_.joinable()) rx_thread_.join();
}

void NetDevice::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

uint32_t NetDevice::Setup(uint32_t queue, uint64_t ring_gpa, uint64_t entries) {
  std::lock_guard lock(mu_);
  uint32_t r = (queue == FERRY_QUEUE_NET_RX ? rx_ : tx_).Setup(ring_gpa, entries);
  if (queue == FERRY_QUEUE_NET_RX) Wake();
  return r;
}

uint32_t NetDevice::Notify(uint32_t queue) {
  if (queue == FERRY_QUEUE_NET_RX) {
    std::lock_guard lock(mu_);
    if (rx_.broken()) return FERRY_E_BROKEN;
    Wake();
    return rx_.ready() ? FERRY_E_OK : FERRY_E_INVAL;
  }
  std::lock_guard lock(mu_);
  if (tx_.broken()) return FERRY_E_BROKEN;
  if (!tx_.ready()) return FERRY_E_INVAL;
  std::vector<uint8_t> frame;
  // At most one ring's worth per doorbell (as the block device): a guest posting from another
  // vCPU all the while must not hold mu_, which status needs, for as long as it likes.
  for (uint32_t served = 0; served < tx_.entries(); ++served) {
    auto d = tx_.Peek();
    if (!d) break;
    if (d->len < kEthHeader || d->len > FERRY_NET_MAX_FRAME || !tx_.BufferOk(d->addr, d->len)) {
      ++stats_.tx_bad;
      tx_.Complete(FERRY_STATUS_BAD_REQUEST);
      continue;
    }
    // Copied out once: the guest may rewrite its buffer while we look at it.
    frame.assign(memory_.host() + d->addr, memory_.host() + d->addr + d->len);
    if (SourceMac(frame) != mac_) {  // no spoofing another station's address
      ++stats_.tx_spoofed;
      tx_.Complete(FERRY_STATUS_BAD_REQUEST);
      continue;
    }
    if (auto ip = SenderIpv4(frame, mac_)) guest_ip_ = *ip;
    OutputLocked(frame);
    tx_.Complete(FERRY_STATUS_OK);
  }
  return tx_.broken() ? FERRY_E_BROKEN : FERRY_E_OK;
}

// A full TAP queue drops the frame, as a wire would; the guest's protocols recover.
void NetDevice::Transmit(std::span<const uint8_t> frame) {
  ssize_t n = ::write(tap_.get(), frame.data(), frame.size());
  if (n == static_cast<ssize_t>(frame.size())) {
    ++stats_.tx_frames;
    stats_.tx_bytes += frame.size();
  } else {
    ++stats_.tx_dropped;
  }
}

void NetDevice::OutputLocked(std::span<const uint8_t> frame) {
  if (output_discarded_) {
    ++stats_.tx_discarded;
  } else if (!output_) {
    Transmit(frame);
  } else if (output_->Add(frame)) {
    ++stats_.tx_buffered;
  } else {
    ++stats_.tx_dropped;
  }
}

void NetDevice::StartBuffering() {
  std::lock_guard lock(mu_);
  if (!output_) output_ = std::make_unique<OutputBuffer>(kOutputBufferBytes);
}

uint64_t NetDevice::SealOutput() {
  std::lock_guard lock(mu_);
  return output_ ? output_->Seal() : 0;
}

void NetDevice::ReleaseOutput(uint64_t epoch) {
  std::lock_guard lock(mu_);  // held while writing: released frames keep their order
  if (!output_) return;
  for (const auto& frame : output_->TakeUpTo(epoch)) Transmit(frame);
}

void NetDevice::StopBuffering() {
  std::lock_guard lock(mu_);
  if (!output_) return;
  for (const auto& frame : output_->TakeAll()) Transmit(frame);
  output_.reset();
}

void NetDevice::DiscardOutput() {
  std::lock_guard lock(mu_);
  output_discarded_ = true;
  announce_left_ = 0;
  if (output_) stats_.tx_discarded += output_->held_frames();
  output_.reset();
}

void NetDevice::Start() {
  if (!rx_thread_.joinable()) {
    rx_thread_ = std::thread([this] {
      Status st = Guarded("NIC receive", [this] { RxLoop(); });
      if (!st.ok()) FERRY_LOG_ERROR("%s: the NIC receives no more frames", st.message().c_str());
    });
  }
}

void NetDevice::Hold() {
  std::lock_guard lock(mu_);  // delivery happens under mu_: once we hold it, none is in flight
  held_ = true;
}

void NetDevice::Release() {
  {
    std::lock_guard lock(mu_);
    held_ = false;
  }
  Wake();
}

void NetDevice::Announce() {
  {
    std::lock_guard lock(mu_);
    if (guest_ip_ == 0 || output_discarded_) return;
    announce_left_ = 3;
    next_announce_ns_ = MonotonicNs();
  }
  Wake();
}

void NetDevice::SendAnnouncementsLocked(uint64_t now_ns, int* timeout_ms) {
  if (announce_left_ > 0 && now_ns >= next_announce_ns_) {
    OutputLocked(GratuitousArp(mac_, guest_ip_));
    ++stats_.announcements;
    --announce_left_;
    if (announce_left_ > 0) next_announce_ns_ = now_ns + kAnnounceGapsNs[announce_left_ - 1];
  }
  if (announce_left_ > 0) {
    int wait = static_cast<int>((next_announce_ns_ - std::min(now_ns, next_announce_ns_)) / 1000000) + 1;
    *timeout_ms = std::min(*timeout_ms, wait);
  }
}

uint32_t NetDevice::DeliverLocked() {
  uint8_t buf[FERRY_NET_MAX_FRAME + 1];
  uint32_t delivered = 0;
  while (!held_ && delivered < kMaxDeliverPerWake) {
    auto d = rx_.Peek();
    if (!d) break;
    ssize_t n = ::read(tap_.get(), buf, sizeof buf);
    if (n <= 0) break;  // EAGAIN: nothing more waiting
    if (n > FERRY_NET_MAX_FRAME) continue;  // jumbo frame from the host side: not ours to take
    if (d->len < FERRY_NET_MAX_FRAME || !rx_.BufferOk(d->addr, d->len)) {
      ++stats_.rx_bad_buffers;  // the frame is dropped with the bad buffer
      rx_.Complete(FERRY_STATUS_BAD_REQUEST, 0);
      ++delivered;
      continue;
    }
    (void)memory_.Write(d->addr, buf, static_cast<uint64_t>(n));  // in range: checked above
    rx_.Complete(FERRY_STATUS_OK, static_cast<uint32_t>(n));
    ++stats_.rx_frames;
    stats_.rx_bytes += n;
    ++delivered;
  }
  return delivered;
}

void NetDevice::RxLoop() {
  while (!stopping_) {
    int timeout_ms = 1000;
    bool want_frames;
    {
      std::lock_guard lock(mu_);
      SendAnnouncementsLocked(MonotonicNs(), &timeout_ms);
      want_frames = !held_ && rx_.Peek().has_value();
    }
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {tap_.get(), static_cast<short>(want_frames ? POLLIN : 0), 0}};
    int r = ::poll(fds, 2, timeout_ms);
    if (r < 0 && errno != EINTR) {
      FERRY_LOG_ERROR("NIC receive: poll failed: %s", std::strerror(errno));
      return;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    if (fds[1].revents & POLLIN) {
      uint32_t delivered;
      {
        std::lock_guard lock(mu_);
        delivered = DeliverLocked();
      }
      if (delivered) raise_irq_();
    }
  }
}

NetState NetDevice::Save() const {
  std::lock_guard lock(mu_);
  return NetState{true, mac_, guest_ip_, rx_.Save(), tx_.Save()};
}

Status NetDevice::Restore(const NetState& saved) {
  if (!saved.present) return Status::Ok();
  std::lock_guard lock(mu_);
  if (saved.mac != mac_) return InvalidArgument("the NIC's MAC differs from the saved VM's");
  guest_ip_ = saved.guest_ip;
  FERRY_RETURN_IF_ERROR(rx_.Restore(saved.rx));
  return tx_.Restore(saved.tx);
}

NetStats NetDevice::stats() const {
  std::lock_guard lock(mu_);
  NetStats s = stats_;
  s.tx_held = output_ ? output_->held_frames() : 0;
  return s;
}

uint32_t NetDevice::guest_ip() const {
  std::lock_guard lock(mu_);
  return guest_ip_;
}

}  // namespace ferry::hypervisor
