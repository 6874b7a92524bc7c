// Opening and accepting authenticated protocol connections: what migration (sender,
// receiver) and replication (primary, standby) share. Each connection authenticates on its
// own (auth.h) before anything else is read from it.
//
// PeerGate is the accepting side. It borrows a Listener (which must outlive it) and runs its
// own threads: one accepts connections, up to `max_handshakes` workers authenticate them
// concurrently, each within `handshake_timeout_ms` in all, so a stranger that connects and
// stays silent (or trickles bytes) holds one worker for that long and never delays the real
// peer. Beyond `max_handshakes` connections in flight (handshaking or authenticated and not
// yet taken), new ones wait in the kernel's backlog. Authenticated peers queue in arrival
// order; Next() hands them out. The gate owns every connection until Next() returns it.
//
// Threads: Next() from one thread at a time (the owner's); Shutdown() and refused() from any
// thread. The destructor (owner's thread) shuts the gate and joins every thread it started;
// it returns promptly whatever the peers do.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ferry/migrate/auth.h"
#include "ferry/migrate/channel.h"
#include "ferry/migrate/security.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

// Connects (tcp or rdma) and authenticates as `role`; for a data stream, `session` is the
// control connection's. Returns the channel, its I/O timeout set; *assigned gets the session
// the peer assigned. Plaintext to a peer on another host needs security.insecure.
Result<std::unique_ptr<Channel>> ConnectPeer(const Endpoint& to, const std::string& transport,
                                             const Security& security, uint64_t io_timeout_ms, Role role,
                                             uint32_t stream, const Session& session, Session* assigned);

struct AcceptedPeer {
  std::unique_ptr<Channel> channel;  // its I/O timeout set to the gate's io_timeout_ms
  Hello hello;
};

// A handshake (hello to welcome) that takes longer than this in all is refused.
inline constexpr uint64_t kHandshakeTimeoutMs = 2000;
// Handshakes in flight at most (each holds a thread and a connection).
inline constexpr uint32_t kMaxHandshakes = 256;

struct PeerGateOptions {
  Security security;  // plaintext: loopback peers only, unless insecure
  Session session{};       // sent in every welcome; data streams must carry it back
  uint64_t io_timeout_ms = 20000;  // the accepted peer's channel timeout
  uint64_t handshake_timeout_ms = kHandshakeTimeoutMs;
  uint32_t max_handshakes = kMaxHandshakes;  // lowered to fit the process's file limit
  std::string who = "ferry";  // prefix of the refusals logged to stderr
};

class PeerGate {
 public:
  // Starts the accept thread; workers start as connections arrive.
  static Result<std::unique_ptr<PeerGate>> Start(Listener& listener, PeerGateOptions options);
  ~PeerGate();
  PeerGate(const PeerGate&) = delete;
  PeerGate& operator=(const PeerGate&) = delete;

  // Waits up to `timeout_ms` (0: forever) for an authenticated peer that asks for `role` (a
  // data stream must carry the session). Queued peers that do not fit are refused (told why,
  // counted, logged) and the wait goes on. Fails once the listener is closed or the gate shut.
  Result<AcceptedPeer> Next(Role role, uint64_t timeout_ms);
  // Any thread, never blocks: stops accepting, cuts the handshakes in flight, drops the
  // queued peers and wakes Next(). The threads end soon after; the destructor joins them.
  void Shutdown();
  // Peers refused so far: failed handshakes, and queued peers of the wrong role or session.
  uint32_t refused() const;

 private:
  struct InFlight {
    Connection* connection;  // owned by the worker's channel while it handshakes
    uint64_t deadline_ns;
    bool expired = false;    // cut by the accept thread at its deadline
  };

  PeerGate(Listener& listener, PeerGateOptions options);
  void AcceptLoop();
  void AcceptOne();
  void WorkerLoop();
  void Handshake(std::unique_ptr<Connection> connection);
  void ExpireLocked(uint64_t now_ns);  // cuts the handshakes past their deadline
  // Every worker busy and a new arrival waiting: the oldest handshakes still going give their places.
  void EvictOldestLocked();
  // Forgets a finished handshake (if still listed); returns whether its deadline cut it.
  bool UnregisterLocked(Connection* connection);
  size_t HeldLocked() const { return pending_.size() + handshaking_.size() + ready_.size(); }
  void Refuse(const std::string& why);

  Listener& listener_;
  const PeerGateOptions o_;
  uint32_t max_held_;  // max_handshakes, lowered to fit the file limit
  std::thread accept_thread_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a pending connection, or stopping_
  std::condition_variable room_cv_;   // accept thread: room for a connection, or stopping_
  std::condition_variable ready_cv_;  // Next(): a ready peer, stopping_ or ended_
  // All guarded by mu_. Every connection the gate holds is in exactly one of these.
  std::deque<std::unique_ptr<Connection>> pending_;  // accepted, waiting for a worker
  std::vector<InFlight> handshaking_;                // in a worker's handshake
  std::deque<AcceptedPeer> ready_;                   // authenticated, not yet taken
  std::vector<std::thread> workers_;  // at most max_held_; only the accept thread adds
  uint32_t idle_workers_ = 0;         // workers waiting for a connection
  bool stopping_ = false;             // Shutdown() was called
  Status ended_;                      // why accepting ended by itself (the listener closed)
  uint32_t refused_ = 0;
};

}  // namespace ferry::migrate
