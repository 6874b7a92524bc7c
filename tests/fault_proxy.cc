#include "fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace ferry::e2e {

FaultProxy::FaultProxy(uint16_t target_port, int victim_connection, uint64_t offset, Fault fault)
    : target_port_(target_port), victim_(victim_connection), offset_(offset), fault_(fault) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(listen_fd_, 16);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  accept_thread_.join();
  ::close(listen_fd_);
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  for (int fd : fds_) ::close(fd);
}

void FaultProxy::AcceptLoop() {
  for (int n = 0; !stopping_; ++n) {
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_port_);
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(client);
      ::close(server);
      continue;
    }
    std::lock_guard lock(mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    threads_.emplace_back([this, client, server, n] { Relay(client, server, n == victim_); });
    threads_.emplace_back([this, client, server] { Relay(server, client, false); });
  }
}

bool FaultProxy::Captured(const std::string& needle) {
  std::lock_guard lock(mu_);
  for (const auto& c : captures_) {
    if (c.find(needle) != std::string::npos) return true;
  }
  return false;
}

size_t FaultProxy::CapturedBytes() {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& c : captures_) n += c.size();
  return n;
}

void FaultProxy::Relay(int from, int to, bool damage) {
  char buf[65536];
  uint64_t pos = 0;
  std::string tap;
  const size_t limit = capture_limit_;
  for (;;) {
    ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n <= 0) break;
    if (tap.size() < limit) tap.append(buf, std::min<size_t>(n, limit - tap.size()));
    if (damage && stalled_) continue;
    if (damage && !fired_ && pos + n > offset_) {
      size_t at = offset_ - pos;
      if (fault_ == Fault::kCut) {
        (void)::send(to, buf, at, MSG_NOSIGNAL);
        fired_ = true;
        ::shutdown(to, SHUT_WR);  // the destination sees the stream end mid-frame
        ::shutdown(from, SHUT_RDWR);
        return;
      }
      if (fault_ == Fault::kFlipByte) buf[at] ^= 0x20;
      fired_ = true;
    }
    pos += n;
    if (::send(to, buf, n, MSG_NOSIGNAL) != n) break;
  }
  // Either side gone ends both, as a real peer's close (RST on further data) would; a
  // half-closed relay would leave the other end writing into a void until its timeout.
  ::shutdown(to, SHUT_RDWR);
  ::shutdown(from, SHUT_RDWR);
  if (!tap.empty()) {
    std::lock_guard lock(mu_);
    captures_.push_back(std::move(tap));
  }
}

}  // namespace ferry::e2e
