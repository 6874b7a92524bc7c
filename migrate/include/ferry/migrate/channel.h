// Channel: one connection speaking the migration protocol's frames (protocol.h). Sends a
// header and payload in one gather write; receives a frame, checks its header, its length
// limit, its sequence number and its checksum before the payload is handed out.
//
// Owns its Connection. One sending thread and one receiving thread at most; Close() from any
// thread. Counters are atomics so a progress reporter may read them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ferry/migrate/protocol.h"
#include "ferry/migrate/rate_limiter.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

struct Frame {
  uint16_t type = 0;
  std::vector<uint8_t> payload;  // reused across Receive calls
};

// An error or abort frame: the peer says why it gives up.
bool IsGiveUp(const Frame& f);
// The reason such a frame carries, or why it could not be read.
std::string GiveUpReason(const Frame& f);

class Channel {
 public:
  explicit Channel(std::unique_ptr<Connection> connection, std::string name);
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // `limiter` (shared by a migration's streams, may be null) paces payload bytes.
  void set_limiter(RateLimiter* limiter) { limiter_ = limiter; }
  void set_timeout_ms(uint64_t ms) { timeout_ms_.store(ms); }
  // A frame longer than this is refused before its payload is read or allocated: a peer that
  // has not authenticated yet may send only handshake-sized frames. Default: each type's limit.
  // Set by the receiving thread (or before the channel is shared).
  void set_max_payload(uint32_t bytes) { max_payload_ = bytes; }
  // Renames the channel for its error messages (before it is shared with other threads).
  void set_name(std::string name) { name_ = std::move(name); }

  Status Send(MsgType type, std::span<const uint8_t> payload = {});
  // Receives the next frame whatever its type.
  Status Receive(Frame* frame);
  // Receives the next frame and requires `type`; a kError frame becomes the peer's error.
  Status Expect(MsgType type, Frame* frame);
  // Sends kError with `reason` (best effort: the peer may be gone) and closes.
  void Fail(const std::string& reason);
  void Close() { connection_->Close(); }

  const std::string& name() const { return name_; }
  Connection& connection() { return *connection_; }
  uint64_t bytes_sent() const { return bytes_sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return bytes_received_.load(std::memory_order_relaxed); }
  uint32_t frames_sent() const { return send_seq_.load(std::memory_order_acquire); }
  uint32_t frames_received() const { return recv_seq_.load(std::memory_order_acquire); }

 private:
  std::unique_ptr<Connection> connection_;
  std::string name_;
  RateLimiter* limiter_ = nullptr;
  uint32_t max_payload_ = UINT32_MAX;  // on top of the type's own limit (protocol.h)
  std::atomic<uint64_t> timeout_ms_{30000};  // Fail() may shorten it while a receive runs
  // Written by the sending / receiving thread only; read by others for progress. A frame
  // counts as received once its payload is checked (the caller then applies it).
  std::atomic<uint32_t> send_seq_{0};
  std::atomic<uint32_t> recv_seq_{0};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
};

}  // namespace ferry::migrate
