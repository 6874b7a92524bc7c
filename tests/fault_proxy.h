// FaultProxy: a TCP relay on 127.0.0.1 between a migration source and its destination that
// damages one connection in flight, for tests: flip one byte at a given offset of the
// client-to-server bytes, or cut the connection there. Connections are counted in accept
// order (0: the control stream, 1..N: data streams). One relay thread per direction; the
// destructor closes everything and joins.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ferry::e2e {

class FaultProxy {
 public:
  // kNone relays untouched (with capture(): a wire tap).
  enum class Fault { kFlipByte, kCut, kNone };
  FaultProxy(uint16_t target_port, int victim_connection, uint64_t offset, Fault fault);
  ~FaultProxy();
  uint16_t port() const { return port_; }
  bool fired() const { return fired_; }
  // From now on the victim connection's bytes toward the destination are read and dropped:
  // the destination hears nothing more on it, the source writes on; its close still ends both.
  void Stall() { stalled_ = true; }
  // Keeps the first `limit` bytes each direction carried, of every connection, for captured().
  void Capture(size_t limit) { capture_limit_ = limit; }
  // Whether any connection carried `needle` (a tap of what a host on the path could read).
  bool Captured(const std::string& needle);
  // Bytes kept so far by relays that have ended.
  size_t CapturedBytes();

 private:
  void AcceptLoop();
  void Relay(int from, int to, bool damage);

  uint16_t target_port_, port_ = 0;
  int victim_;
  uint64_t offset_;
  Fault fault_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false}, fired_{false}, stalled_{false};
  std::thread accept_thread_;
  std::mutex mu_;  // guards fds_ and threads_
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> capture_limit_{0};
  std::vector<std::string> captures_;  // one per relay direction; guarded by mu_
};

}  // namespace ferry::e2e
