// NetDevice: the paravirtual NIC. Receive and transmit queues in guest memory (guest_abi.h),
// backed by a TAP device on the host.
//
// Transmit is served on the vCPU that rings the doorbell: each frame is copied out of guest
// memory, checked (size, the guest's own source MAC), and written to the TAP. The guest's IPv4
// address is learned from its frames so that the VMM can announce it after a restore or
// migration (Announce: gratuitous ARP). Receive runs on the device's own thread: it reads a
// frame from the TAP only when the guest has posted a buffer, copies it in (a dirty page),
// completes the descriptor and raises the guest's event. Hold() stops all writes into guest
// memory (pause, snapshot, migration); frames then wait in the TAP's queue.
// Thread-safe: one lock guards the queues; the receive thread is owned and joined here.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "device_queue.h"
#include "ethernet.h"
#include "output_buffer.h"
#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"
#include "ferry/hypervisor/device_state.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

class NetDevice {
 public:
  // `raise_irq` is called (without the device's lock) after receive completions.
  static Result<std::unique_ptr<NetDevice>> Open(const DeviceConfig& config, GuestMemory& memory,
                                                 std::function<void()> raise_irq);
  // Over an open frame descriptor: Open()'s TAP, or in tests one end of a non-blocking
  // SOCK_SEQPACKET socketpair (frames keep their boundaries, as on a TAP).
  static Result<std::unique_ptr<NetDevice>> OpenOnFd(UniqueFd frames, const Mac& mac, GuestMemory& memory,
                                                     std::function<void()> raise_irq);
  ~NetDevice();

  const Mac& mac() const { return mac_; }
  uint32_t Setup(uint32_t queue, uint64_t ring_gpa, uint64_t entries);
  uint32_t Notify(uint32_t queue);  // FERRY_E_*
  void Start();                     // starts receiving
  void Hold();                      // returns once nothing more is written into guest memory
  void Release();
  // Gratuitous ARP now, 50 ms and 150 ms later (if the IP is known). Like the guest's frames,
  // they are held while buffering, so a destination that may still give up announces nothing.
  void Announce();
  // Output commit (replication): while buffering, transmitted frames are held in epochs
  // instead of leaving; SealOutput() closes an epoch, ReleaseOutput(e) sends every frame of
  // epochs <= e, StopBuffering() sends whatever is held and transmits directly again.
  void StartBuffering();
  uint64_t SealOutput();
  void ReleaseOutput(uint64_t epoch);
  void StopBuffering();
  // Post-copy destination that gives up: drops every held frame unsent, stops buffering, and
  // from now on drops every frame the guest transmits and every announcement (tx_discarded):
  // none of this VM's output may leave, since the source takes the VM back.
  void DiscardOutput();
  NetState Save() const;
  Status Restore(const NetState& saved);
  NetStats stats() const;
  uint32_t guest_ip() const;

 private:
  NetDevice(UniqueFd tap, UniqueFd wake, const Mac& mac, GuestMemory& memory, std::function<void()> raise_irq);
  void RxLoop();
  // Moves frames from the TAP into posted buffers; returns how many were delivered.
  uint32_t DeliverLocked();
  void SendAnnouncementsLocked(uint64_t now_ns, int* timeout_ms);
  void Transmit(std::span<const uint8_t> frame);
  // Sends, holds (buffering) or drops (output discarded) one frame the guest or we produced.
  void OutputLocked(std::span<const uint8_t> frame);
  void Wake();

  const UniqueFd tap_;
  const UniqueFd wake_;  // eventfd: new receive buffers, release, announce, stop
  const Mac mac_;
  GuestMemory& memory_;
  const std::function<void()> raise_irq_;
  std::atomic<bool> stopping_{false};
  std::thread rx_thread_;

  mutable std::mutex mu_;
  DeviceQueue rx_, tx_;            // guarded by mu_
  bool held_ = false;              // guarded by mu_
  uint32_t guest_ip_ = 0;          // guarded by mu_
  int announce_left_ = 0;          // guarded by mu_
  uint64_t next_announce_ns_ = 0;  // guarded by mu_
  NetStats stats_;                 // guarded by mu_
  std::unique_ptr<OutputBuffer> output_;  // guarded by mu_; null: frames leave at once
  bool output_discarded_ = false;         // guarded by mu_: DiscardOutput ran; nothing leaves
};

}  // namespace ferry::hypervisor
