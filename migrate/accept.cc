// ConnectPeer (accept.h): the connecting side. The accepting side is PeerGate (peer_gate.cc).
#include "ferry/migrate/accept.h"

#include "ferry/migrate/tls.h"

namespace ferry::migrate {

Result<std::unique_ptr<Channel>> ConnectPeer(const Endpoint& to, const std::string& transport,
                                             const Security& security, uint64_t io_timeout_ms, Role role,
                                             uint32_t stream, const Session& session, Session* assigned) {
  FERRY_RETURN_IF_ERROR(CheckSecurity(security));
  std::unique_ptr<Connection> conn;
  if (transport == "rdma") {
    // RDMA's queue pairs cannot carry TLS records here: protected peers take TCP.
    if (security.tls()) {
      return Status(ErrorCode::kUnsupported, "a keyed or certified connection is TLS, which RDMA does not carry yet: use --transport tcp");
    }
    FERRY_ASSIGN_OR_RETURN(conn, ConnectRdma(to, io_timeout_ms));
  } else {
    FERRY_ASSIGN_OR_RETURN(conn, ConnectTcp(to, io_timeout_ms));
  }
  if (!security.tls() && !security.insecure && !conn->PeerIsLoopback()) {
    // Guest memory in the clear leaves this host only by the operator's explicit choice.
    return Status(ErrorCode::kDenied, "refusing to send guest state in the clear to " + conn->PeerAddress() +
                                           ", another host: give both ends --key (or certificates), or --insecure; "
                                           "without them a destination accepts loopback peers only");
  }
  std::optional<Key> hmac = security.key;
  if (security.tls()) {  // TLS 1.3 (tls.h), the protocol's own handshake inside it
    FERRY_ASSIGN_OR_RETURN(auto tls, TlsConnection::Wrap(std::move(conn), security, TlsConnection::Side::kClient, to.host));
    FERRY_RETURN_IF_ERROR(tls->Handshake(io_timeout_ms));
    if (security.certs) {
      FERRY_ASSIGN_OR_RETURN(hmac, tls->ExportKey());
    }
    conn = std::move(tls);
  }
  std::string name = role == Role::kControl ? "control stream" : "data stream " + std::to_string(stream);
  auto ch = std::make_unique<Channel>(std::move(conn), name);
  ch->set_timeout_ms(io_timeout_ms);
  FERRY_ASSIGN_OR_RETURN(*assigned, AuthenticateToDestination(*ch, hmac, role, stream, session));
  return ch;
}

}  // namespace ferry::migrate
