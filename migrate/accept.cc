// ConnectPeer (accept.h): the connecting side. The accepting side is PeerGate (peer_gate.cc).
#include "ferry/migrate/accept.h"

#include "ferry/migrate/tls.h"

namespace ferry::migrate {

Result<std::unique_ptr<Channel>> ConnectPeer(const Endpoint& to, const std::string& transport,
                                             const std::optional<Key>& key, uint64_t io_timeout_ms, Role role,
                                             uint32_t stream, const Session& session, Session* assigned) {
  std::unique_ptr<Connection> conn;
  if (transport == "rdma") {
    // RDMA's queue pairs cannot carry TLS records here: keyed peers take TCP.
    if (key) return Status(ErrorCode::kUnsupported, "a keyed connection is TLS, which RDMA does not carry yet: use --transport tcp");
    FERRY_ASSIGN_OR_RETURN(conn, ConnectRdma(to, io_timeout_ms));
  } else {
    FERRY_ASSIGN_OR_RETURN(conn, ConnectTcp(to, io_timeout_ms));
  }
  if (key) {  // every keyed connection is TLS 1.3 with the key as its PSK (tls.h)
    FERRY_ASSIGN_OR_RETURN(auto tls, TlsConnection::Wrap(std::move(conn), *key, TlsConnection::Side::kClient));
    FERRY_RETURN_IF_ERROR(tls->Handshake(io_timeout_ms));
    conn = std::move(tls);
  }
  std::string name = role == Role::kControl ? "control stream" : "data stream " + std::to_string(stream);
  auto ch = std::make_unique<Channel>(std::move(conn), name);
  ch->set_timeout_ms(io_timeout_ms);
  FERRY_ASSIGN_OR_RETURN(*assigned, AuthenticateToDestination(*ch, key, role, stream, session));
  return ch;
}

}  // namespace ferry::migrate
