// ConnectPeer (accept.h): the connecting side. The accepting side is PeerGate (peer_gate.cc).
#include "ferry/migrate/accept.h"

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

}  // namespace ferry::migrate
