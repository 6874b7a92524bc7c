// PeerGate (accept.h): one accept thread, a bounded pool of handshake workers, and a queue of
// authenticated peers. Every connection the gate holds sits in exactly one of pending_,
// handshaking_ or ready_, so Shutdown() can reach (and close) each of them.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <system_error>

#include "ferry/base/clock.h"
#include "ferry/migrate/accept.h"

#include "ferry/migrate/tls.h"

namespace ferry::migrate {
namespace {

// Accept() waits at most this long per call, so the accept thread checks the handshakes'
// deadlines and Shutdown() at this pace (the Listener has no other way to wake it).
constexpr uint64_t kAcceptSliceMs = 50;
// After an accept error such as running out of file descriptors: the connection stays in
// the backlog and is tried again after this pause (without it the loop would spin).
constexpr uint64_t kAcceptRetryMs = 100;
// A TCP connection holds its socket and its own io_context's epoll, eventfd and timerfd
// (tcp_transport.cc); the gate's connections may use at most half of the file limit.
constexpr uint64_t kFdsPerConnection = 4;

uint32_t FitToFileLimit(uint32_t wanted) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return std::max<uint32_t>(1, wanted);
  uint64_t fit = rl.rlim_cur / (2 * kFdsPerConnection);
  return static_cast<uint32_t>(std::clamp<uint64_t>(fit, 1, std::max<uint32_t>(1, wanted)));
}

// The longest frame a source sends before it is authenticated: hello, auth, or its error.
uint32_t MaxHandshakePayload() {
  auto max = [](MsgType t) { return MaxPayload(static_cast<uint16_t>(t)); };
  return std::max({max(MsgType::kHello), max(MsgType::kAuth), max(MsgType::kError)});
}

}  // namespace

PeerGate::PeerGate(Listener& listener, PeerGateOptions options)
    : listener_(listener), o_(std::move(options)), max_held_(FitToFileLimit(o_.max_handshakes)) {
  handshaking_.reserve(max_held_);  // registering a handshake never allocates (or throws)
  workers_.reserve(max_held_);
}

Result<std::unique_ptr<PeerGate>> PeerGate::Start(Listener& listener, PeerGateOptions options) {
  std::unique_ptr<PeerGate> gate(new PeerGate(listener, std::move(options)));
  PeerGate* g = gate.get();
  try {
    gate->accept_thread_ = std::thread([g] {
      try {
        g->AcceptLoop();
      } catch (const std::exception& e) {
        std::lock_guard lock(g->mu_);
        g->ended_ = Internal(std::string("the accept thread failed: ") + e.what());
        g->ready_cv_.notify_all();
      } catch (...) {
        std::lock_guard lock(g->mu_);
        g->ended_ = Internal("the accept thread failed");
        g->ready_cv_.notify_all();
      }
    });
  } catch (const std::system_error& e) {
    return Status(ErrorCode::kIo, std::string("start the accept thread: ") + e.what());
  }
  return gate;
}

PeerGate::~PeerGate() {
  Shutdown();
  if (accept_thread_.joinable()) accept_thread_.join();
  // Only the accept thread adds workers, and it has ended.
  for (auto& t : workers_) t.join();
}

void PeerGate::Shutdown() {
  std::deque<std::unique_ptr<Connection>> pending;
  std::deque<AcceptedPeer> ready;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    // shutdown(2) underneath: wakes a worker blocked on its peer at once, from any thread.
    for (auto& f : handshaking_) f.connection->Close();
    pending.swap(pending_);
    ready.swap(ready_);
    work_cv_.notify_all();
    room_cv_.notify_all();
    ready_cv_.notify_all();
  }
  // Closed and freed outside the lock.
}

uint32_t PeerGate::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
}

void PeerGate::ExpireLocked(uint64_t now_ns) {
  for (auto& f : handshaking_) {
    if (!f.expired && now_ns >= f.deadline_ns) {
      f.expired = true;
      f.connection->Close();  // its worker's next (or current) read fails at once
    }
  }
}

// A flood of strangers must not keep the real peer out until their deadlines: with every
// worker busy, each connection waiting for one gets the place of an idle worker, of a
// handshake being cut already, or of the oldest one still going (it has had the longest to
// prove itself). A real peer's handshake takes milliseconds, so only a flood of a whole
// pool's worth of connections within them could cut it.
void PeerGate::EvictOldestLocked() {
  size_t freeing = idle_workers_;
  for (const auto& f : handshaking_) freeing += f.expired;
  while (freeing < pending_.size()) {
    InFlight* oldest = nullptr;
    for (auto& f : handshaking_) {
      if (!f.expired && (!oldest || f.deadline_ns < oldest->deadline_ns)) oldest = &f;
    }
    if (!oldest) return;
    oldest->expired = true;
    oldest->connection->Close();
    ++freeing;
  }
}

bool PeerGate::UnregisterLocked(Connection* connection) {
  auto it = std::find_if(handshaking_.begin(), handshaking_.end(),
                         [&](const InFlight& f) { return f.connection == connection; });
  if (it == handshaking_.end()) return false;
  const bool expired = it->expired;
  handshaking_.erase(it);
  room_cv_.notify_one();
  return expired;
}

void PeerGate::AcceptLoop() {
  bool failing = false;  // an accept error is logged once per streak
  for (;;) {
    {
      std::unique_lock lock(mu_);
      for (;;) {
        ExpireLocked(MonotonicNs());
        if (stopping_) return;
        if (HeldLocked() <= max_held_) break;  // one over: a new arrival, which the oldest makes room for
        // A connection still waiting for a worker (every worker busy since it came): make room.
        if (workers_.size() >= max_held_) EvictOldestLocked();
        room_cv_.wait_for(lock, std::chrono::milliseconds(kAcceptSliceMs));
      }
    }
    auto conn = listener_.Accept(kAcceptSliceMs);
    if (!conn.ok()) {
      const Status& st = conn.status();
      if (st.code() == ErrorCode::kTimeout) continue;
      std::unique_lock lock(mu_);
      if (st.code() == ErrorCode::kAborted) {  // the listener was closed: nothing more comes
        ended_ = st;
        ready_cv_.notify_all();
        return;
      }
      // Not the peer's doing (file limit, memory): the connection waits in the backlog.
      if (!failing) std::fprintf(stderr, "%s: %s (retrying)\n", o_.who.c_str(), st.message().c_str());
      failing = true;
      room_cv_.wait_for(lock, std::chrono::milliseconds(kAcceptRetryMs), [&] { return stopping_; });
      continue;
    }
    failing = false;
    std::lock_guard lock(mu_);
    if (stopping_) return;  // the connection is closed as it goes
    pending_.push_back(std::move(conn).value());
    // Each pending connection needs a worker of its own: never queue one behind a handshake.
    if (pending_.size() > idle_workers_ && workers_.size() < max_held_) {
      try {
        workers_.emplace_back([this] {
          try {
            WorkerLoop();
          } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: a handshake worker failed: %s\n", o_.who.c_str(), e.what());
          } catch (...) {
            std::fprintf(stderr, "%s: a handshake worker failed\n", o_.who.c_str());
          }
        });
      } catch (const std::system_error& e) {
        // No thread to spare: existing workers take the connection in turn; with none, drop it.
        if (workers_.empty()) {
          pending_.pop_back();
          std::fprintf(stderr, "%s: cannot start a handshake worker: %s\n", o_.who.c_str(), e.what());
        }
      }
    }
    if (workers_.size() >= max_held_) EvictOldestLocked();
    work_cv_.notify_one();
  }
}

void PeerGate::WorkerLoop() {
  for (;;) {
    std::unique_ptr<Connection> conn;
    {
      std::unique_lock lock(mu_);
      ++idle_workers_;
      work_cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      --idle_workers_;
      if (stopping_) return;
      conn = std::move(pending_.front());
      pending_.pop_front();
      // Registered while still under the lock: Shutdown() and the deadline can reach it.
      handshaking_.push_back({conn.get(), MonotonicNs() + o_.handshake_timeout_ms * 1000000});
    }
    try {
      Handshake(std::move(conn));
    } catch (const std::exception& e) {  // e.g. out of memory: this peer is lost, the worker goes on
      std::fprintf(stderr, "%s: a handshake failed: %s\n", o_.who.c_str(), e.what());
    }
  }
}

void PeerGate::Handshake(std::unique_ptr<Connection> connection) {
  Connection* raw = connection.get();
  // Unregisters the connection before it is destroyed, on every path (exceptions included).
  struct Unregister {
    PeerGate* gate;
    Connection* connection;
    ~Unregister() {
      std::lock_guard lock(gate->mu_);
      gate->UnregisterLocked(connection);
    }
  };
  std::unique_ptr<Channel> ch;  // declared before the guard: destroyed after it
  std::unique_ptr<TlsConnection> tls;  // likewise: the registered connection lives inside it
  Unregister guard{this, raw};
  const std::string peer = raw->PeerAddress();
  Result<Hello> hello = Status(ErrorCode::kRefused, "no handshake");
  std::optional<Key> hmac = o_.security.key;
  bool tls_failed = false;
  if (o_.security.tls()) {
    // TLS 1.3 first (the key as its PSK, or certificates both ways), then the protocol's own
    // handshake inside, keyed with certificates by the session's exporter.
    // On failure the connection stays ours (and registered) until the guard unregisters it:
    // Shutdown() may close it meanwhile, so it must not be destroyed inside Wrap.
    auto wrapped = TlsConnection::Wrap(&connection, o_.security, TlsConnection::Side::kServer);
    if (wrapped.ok()) {
      tls = std::move(*wrapped);
      Status st = tls->Handshake(o_.handshake_timeout_ms);
      if (st.ok() && o_.security.certs) {
        auto exported = tls->ExportKey();
        if (exported.ok()) {
          hmac = std::move(*exported);
        } else {
          st = exported.status();
        }
      }
      if (st.ok()) {
        connection = std::move(tls);
      } else {
        hello = Status(st.code(), "refused " + peer + ": " + st.message());
      }
    } else {
      hello = wrapped.status();
      // Still ours (registered, so it outlives the guard) but never spoken to: a TLS gate
      // does not fall back to the plaintext handshake.
      tls_failed = true;
    }
  }
  if (connection && !tls_failed) {
    ch = std::make_unique<Channel>(std::move(connection), "handshake");
    ch->set_timeout_ms(o_.handshake_timeout_ms);
    ch->set_max_payload(MaxHandshakePayload());
    hello = AuthenticateSource(*ch, hmac, o_.security.insecure, o_.session);
  }

  std::unique_lock lock(mu_);
  const bool expired = UnregisterLocked(raw);
  if (stopping_) return;  // cut by Shutdown(): nobody waits for it
  if (hello.ok() && !expired) {
    ch->set_timeout_ms(o_.io_timeout_ms);
    ch->set_max_payload(UINT32_MAX);
    ch->set_name(hello->role == Role::kControl ? "control stream" : "data stream");
    ready_.push_back(AcceptedPeer{std::move(ch), *hello});
    ready_cv_.notify_all();
    return;
  }
  ++refused_;
  lock.unlock();
  if (expired) {
    std::fprintf(stderr, "%s: refused %s: no handshake within %llu ms\n", o_.who.c_str(), peer.c_str(),
                 static_cast<unsigned long long>(o_.handshake_timeout_ms));
  } else {
    std::fprintf(stderr, "%s: %s\n", o_.who.c_str(), hello.status().message().c_str());
  }
}

Result<AcceptedPeer> PeerGate::Next(Role role, uint64_t timeout_ms) {
  const uint64_t deadline = timeout_ms ? MonotonicNs() + timeout_ms * 1000000 : 0;
  std::unique_lock lock(mu_);
  for (;;) {
    if (stopping_) return Status(ErrorCode::kAborted, "listener closed");
    if (!ended_.ok()) return ended_;
    if (!ready_.empty()) {
      AcceptedPeer p = std::move(ready_.front());
      ready_.pop_front();
      room_cv_.notify_one();
      if (p.hello.role == role && (role == Role::kControl || p.hello.session == o_.session)) return p;
      ++refused_;
      lock.unlock();
      std::string peer = p.channel->connection().PeerAddress();
      p.channel->Fail("unexpected connection (wrong role or session)");
      std::fprintf(stderr, "%s: refused %s: unexpected connection (wrong role or session)\n", o_.who.c_str(),
                   peer.c_str());
      lock.lock();
      continue;
    }
    if (!deadline) {
      ready_cv_.wait(lock);
      continue;
    }
    uint64_t now = MonotonicNs();
    if (now >= deadline) return Timeout("no authenticated source connected in time");
    ready_cv_.wait_for(lock, std::chrono::nanoseconds(deadline - now));
  }
}

}  // namespace ferry::migrate
