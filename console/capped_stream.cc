#include "capped_stream.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ferry::console {

bool WaitFor(int fd, short events, int timeout_ms) {
  if (timeout_ms <= 0) return false;
  pollfd p{fd, events, 0};
  int n;
  do n = ::poll(&p, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  return n > 0;
}

int MsUntil(Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
}

int IoWaitMs(Deadline deadline) { return std::min(kIoTimeoutMs, MsUntil(deadline)); }

void SocketName(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  auto* sa = reinterpret_cast<sockaddr*>(&a);
  if ((peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len)) != 0) return;
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return;
  ip = host;
  port = std::atoi(serv);
}

std::string PeerName(int fd) {
  std::string ip;
  int port = 0;
  SocketName(fd, true, ip, port);
  if (ip.empty()) return "an unknown peer";
  return (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

ssize_t PlainWire::Recv(char* buf, size_t size, int timeout_ms) {
  if (!WaitFor(fd_, POLLIN, timeout_ms)) return -1;
  ssize_t n;
  do n = ::recv(fd_, buf, size, 0);
  while (n < 0 && errno == EINTR);
  return n;
}

bool PlainWire::SendAll(const char* p, size_t size, Deadline deadline) {
  size_t done = 0;
  while (done < size) {
    if (!WaitFor(fd_, POLLOUT, IoWaitMs(deadline))) return false;
    // Never blocking inside send(): a blocking socket's send waits for room for all it was
    // given (for its SO_SNDTIMEO, or for good), past the deadline the poll keeps.
    ssize_t n = ::send(fd_, p + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

int CappedStream::ReadWaitMs() const { return IoWaitMs(deadline_); }

bool CappedStream::is_readable() const {
  return pos_ < len_ || wire_.HasBuffered() || WaitFor(wire_.fd(), POLLIN, ReadWaitMs());
}

int CappedStream::WriteWaitMs() const {
  return write_deadline_ ? IoWaitMs(*write_deadline_) : kIoTimeoutMs;
}

bool CappedStream::is_writable() const { return WaitFor(wire_.fd(), POLLOUT, WriteWaitMs()); }

ssize_t CappedStream::read(char* ptr, size_t size) {
  if (pos_ == len_) {
    if (budget_ == 0) {
      over_budget_ = true;
      return -1;
    }
    const ssize_t n = wire_.Recv(buf_, std::min(sizeof buf_, budget_), ReadWaitMs());
    if (n <= 0) return n;
    budget_ -= static_cast<size_t>(n);
    pos_ = 0;
    len_ = static_cast<size_t>(n);
  }
  const size_t n = std::min(size, len_ - pos_);
  std::memcpy(ptr, buf_ + pos_, n);
  pos_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t CappedStream::write(const char* ptr, size_t size) {
  if (size == 0) return 0;
  wrote_ = true;  // an answer has begun: no other may follow it
  // A client that reads the answer slower than write_time_ allows is cut off: each wait for it
  // was bounded, but one that took a little every few seconds held a server thread for as long
  // as it liked (the 210 KB chart script, read a KiB at a time), and eight took every thread.
  if (!write_deadline_) write_deadline_ = std::chrono::steady_clock::now() + write_time_;
  if (!wire_.SendAll(ptr, size, *write_deadline_)) return -1;
  return static_cast<ssize_t>(size);
}

}  // namespace ferry::console
