#include "ferry/migrate/accept.h"

#include <algorithm>
#include <cstdio>

#include "ferry/base/clock.h"

namespace ferry::migrate {

Result<std::unique_ptr<Channel>> ConnectPeer(const Endpoint& to, const std::string& transport,
                                             const std::optional<Key>& key, uint64_t io_timeout_ms, Role role,
                                             uint32_t stream, const Session& session, Session* assigned) {
  std::unique_ptr<Connection> conn;
  if (transport == "rdma") {
    FERRY_ASSIGN_OR_RETURN(conn, ConnectRdma(to, io_timeout_ms));
  } else {
    FERRY_ASSIGN_OR_RETURN(conn, ConnectTcp(to, io_timeout_ms));
  }
  std::string name = role == Role::kControl ? "control stream" : "data stream " + std::to_string(stream);
  auto ch = std::make_unique<Channel>(std::move(conn), name);
  ch->set_timeout_ms(io_timeout_ms);
  FERRY_ASSIGN_OR_RETURN(*assigned, AuthenticateToDestination(*ch, key, role, stream, session));
  return ch;
}

Result<AcceptedPeer> AcceptPeer(Listener& listener, const std::optional<Key>& key, const Session& session, Role role,
                                uint64_t timeout_ms, uint64_t io_timeout_ms, const std::string& who,
                                uint32_t* refused) {
  uint64_t deadline = timeout_ms ? MonotonicNs() + timeout_ms * 1000000 : 0;
  for (;;) {
    uint64_t left = 0;
    if (deadline) {
      uint64_t now = MonotonicNs();
      if (now >= deadline) return Timeout("no authenticated source connected in time");
      left = std::max<uint64_t>(1, (deadline - now) / 1000000);
    }
    FERRY_ASSIGN_OR_RETURN(auto conn, listener.Accept(left));
    std::string peer = conn->PeerAddress();
    auto ch = std::make_unique<Channel>(std::move(conn), role == Role::kControl ? "control stream" : "data stream");
    ch->set_timeout_ms(io_timeout_ms);
    auto h = AuthenticateSource(*ch, key, session);
    if (!h.ok()) {
      ++*refused;
      std::fprintf(stderr, "%s: %s\n", who.c_str(), h.status().message().c_str());
      continue;  // a stranger does not end the wait for the real source
    }
    if (h->role != role || (role == Role::kData && h->session != session)) {
      ch->Fail("unexpected connection (wrong role or session)");
      ++*refused;
      std::fprintf(stderr, "%s: refused %s: unexpected connection (wrong role or session)\n", who.c_str(), peer.c_str());
      continue;
    }
    return AcceptedPeer{std::move(ch), *h};
  }
}

}  // namespace ferry::migrate
