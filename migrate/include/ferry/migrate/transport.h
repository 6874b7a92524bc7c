// Transport: the byte pipes a migration runs over. The pipeline (sender, receiver, channel)
// sees only these interfaces, so TCP (Boost.Asio, here) and RDMA (libibverbs, next) plug in
// without touching it.
//
// A Connection is used by one thread at a time for Read/Write; Close() may be called from any
// thread and wakes a blocked Read or Write with an error. Every operation has a deadline: a
// stalled peer becomes a Timeout, never a hang.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ferry/base/status.h"

namespace ferry::migrate {

class Connection {
 public:
  virtual ~Connection() = default;
  // Writes both buffers completely (header and payload in one gather write).
  virtual Status Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t timeout_ms) = 0;
  // Fills `out` completely; a peer that closes first is an error naming what was missing.
  virtual Status Read(std::span<uint8_t> out, uint64_t timeout_ms) = 0;
  // Reads what has arrived, at least one byte and at most out.size() (a layer above that
  // frames bytes itself, as TLS does); a closed stream is an error.
  virtual Result<size_t> ReadSome(std::span<uint8_t> out, uint64_t timeout_ms) {
    (void)out;
    (void)timeout_ms;
    return Status(ErrorCode::kUnsupported, "this transport cannot carry TLS");
  }
  virtual void Close() = 0;
  virtual std::string PeerAddress() const = 0;
  virtual bool PeerIsLoopback() const = 0;
  // Whether the transport itself authenticates every byte in order (TLS's AEAD records, once
  // the handshake is done): frames then carry no checksum of their own.
  virtual bool Authenticated() const { return false; }
};

class Listener {
 public:
  virtual ~Listener() = default;
  // Waits for the next connection; Timeout after timeout_ms (0: wait forever).
  virtual Result<std::unique_ptr<Connection>> Accept(uint64_t timeout_ms) = 0;
  virtual std::string LocalAddress() const = 0;  // "host:port" actually bound
  virtual void Close() = 0;                      // any thread; wakes Accept
};

// "host:port" with a numeric IPv4/IPv6 host (brackets around IPv6), port 0..65535.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
};
Result<Endpoint> ParseEndpoint(const std::string& text);

Result<std::unique_ptr<Listener>> ListenTcp(const Endpoint& at);
Result<std::unique_ptr<Connection>> ConnectTcp(const Endpoint& to, uint64_t timeout_ms);
// RDMA (RC queue pairs over librdmacm). Reports why it cannot run when built without
// libibverbs or when no RDMA device exists.
Result<std::unique_ptr<Connection>> ConnectRdma(const Endpoint& to, uint64_t timeout_ms);

}  // namespace ferry::migrate
