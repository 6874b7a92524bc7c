// CappedStream: the console's one request per connection, read through a byte budget and a
// deadline, over a Wire (the accepted socket as it is, or a TLS session on it: tls.h). The
// cap is counted in request bytes (decrypted ones under TLS), so both wires bound alike what
// one client can make the server hold. A CappedStream and its Wire belong to the server
// thread serving that connection; neither owns the socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include <httplib.h>

namespace ferry::console {

using Deadline = std::chrono::steady_clock::time_point;

inline constexpr int kIoTimeoutMs = 5000;  // one read or write at most, as cpp-httplib's default

// Waits up to timeout_ms for `events` on fd; false on timeout or error.
bool WaitFor(int fd, short events, int timeout_ms);
// Milliseconds left until `deadline` (0 once it has passed).
int MsUntil(Deadline deadline);
// One wait for the peer: kIoTimeoutMs at most, and never past `deadline`.
int IoWaitMs(Deadline deadline);
// "ip:port" of the socket's peer (peer) or its own end; empty when unknown.
void SocketName(int fd, bool peer, std::string& ip, int& port);
std::string PeerName(int fd);

// Bytes to and from the peer. Each call waits at most the time it is given.
class Wire {
 public:
  virtual ~Wire() = default;
  // Up to `size` bytes: how many (> 0), 0 at the peer's end, -1 on an error or after timeout_ms.
  virtual ssize_t Recv(char* buf, size_t size, int timeout_ms) = 0;
  // All of [p, p + size) by `deadline`, waiting at most kIoTimeoutMs each time the peer does
  // not take more.
  virtual bool SendAll(const char* p, size_t size, Deadline deadline) = 0;
  // Whether bytes the peer sent are already held here (so a poll on the socket would miss them).
  virtual bool HasBuffered() const { return false; }
  // Ends the conversation before the socket is shut down (TLS: close_notify).
  virtual void Finish() {}
  virtual int fd() const = 0;
};

// The socket itself: plaintext HTTP.
class PlainWire final : public Wire {
 public:
  explicit PlainWire(int fd) : fd_(fd) {}
  ssize_t Recv(char* buf, size_t size, int timeout_ms) override;
  bool SendAll(const char* p, size_t size, Deadline deadline) override;
  int fd() const override { return fd_; }

 private:
  const int fd_;
};

// cpp-httplib 0.11 keeps a request line, a header or a chunked body of any length in memory
// while it reads it, so the budget is what bounds what one client can make the server hold.
class CappedStream final : public httplib::Stream {
 public:
  // The request is read by `deadline`; the answer is sent within `write_time` of its first byte.
  CappedStream(Wire& wire, size_t budget, Deadline deadline, std::chrono::milliseconds write_time)
      : wire_(wire), budget_(budget), deadline_(deadline), write_time_(write_time) {}

  bool over_budget() const { return over_budget_; }
  bool wrote() const { return wrote_; }

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  using httplib::Stream::write;
  // All of it or -1 (cpp-httplib writes a status line with one call).
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override { SocketName(wire_.fd(), true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { SocketName(wire_.fd(), false, ip, port); }
  socket_t socket() const override { return wire_.fd(); }

 private:
  int ReadWaitMs() const;
  int WriteWaitMs() const;

  Wire& wire_;
  size_t budget_;  // bytes the request may still bring
  const Deadline deadline_;
  const std::chrono::milliseconds write_time_;
  std::optional<Deadline> write_deadline_;  // from the answer's first byte
  bool over_budget_ = false, wrote_ = false;
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;  // buf_[pos_, len_) is read but not yet taken
};

}  // namespace ferry::console
