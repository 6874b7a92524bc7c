// TLS 1.3 for the protocol's connections between hosts (migration, replication, standby,
// handover): confidentiality and integrity for every byte after the handshake, replays and
// reordering refused by the record layer. Authentication is mutual, one of (security.h):
//   - the shared key (`--key FILE`) as the TLS 1.3 external PSK (psk_dhe_ke: an ephemeral key
//     exchange too, so a key that leaks later does not open recorded sessions);
//   - certificates: each end presents its own and checks the peer's against its CA and name.
// PROTOCOL.md shows the layering: TCP, TLS, then the protocol's own hello/challenge/auth
// (kept inside: it binds the session ids and roles; with certificates its HMAC key is the
// TLS session's exporter, ExportKey()), then frames.
//
// TlsConnection wraps a connected transport Connection (it must offer ReadSome) through
// OpenSSL with memory BIOs, so any byte pipe can carry it. Like every Connection, one thread
// at a time reads or writes; Close() from any thread wakes it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/migrate/auth.h"
#include "ferry/migrate/security.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

class TlsConnection final : public Connection {
 public:
  enum class Side { kClient, kServer };
  // Takes the connection over (no I/O yet); Handshake() runs the handshake. `security` must
  // hold a key or certificates. A client checks the server's certificate against
  // `dialled_host` unless the certificates name a peer.
  static Result<std::unique_ptr<TlsConnection>> Wrap(std::unique_ptr<Connection> inner, const Security& security, Side side,
                                                     const std::string& dialled_host = "");
  // The same, taking *inner over only on success: on failure the caller still owns it (a
  // listener that registered it for closing must unregister it before it is destroyed).
  static Result<std::unique_ptr<TlsConnection>> Wrap(std::unique_ptr<Connection>* inner, const Security& security, Side side,
                                                     const std::string& dialled_host = "");
  ~TlsConnection() override;
  // The whole handshake within timeout_ms. A peer without TLS, a wrong key, a certificate
  // that is expired, unknown to the CA or for another name, or a tampered handshake is an
  // error that says which, on both ends.
  Status Handshake(uint64_t timeout_ms);

  Status Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t timeout_ms) override;
  Status Read(std::span<uint8_t> out, uint64_t timeout_ms) override;
  Result<size_t> ReadSome(std::span<uint8_t> out, uint64_t timeout_ms) override;
  void Close() override { inner_->Close(); }
  std::string PeerAddress() const override { return inner_->PeerAddress(); }
  bool PeerIsLoopback() const override { return inner_->PeerIsLoopback(); }
  bool Authenticated() const override;
  // "TLSv1.3 TLS_AES_128_GCM_SHA256" once the handshake is done.
  std::string Describe() const;
  // 32 bytes bound to this TLS session (RFC 8446 7.5), equal on both ends: the key of the
  // protocol's HMAC handshake inside a certificate session.
  Result<Key> ExportKey() const;

  struct Impl;

 private:
  TlsConnection(std::unique_ptr<Connection> inner, std::unique_ptr<Impl> impl);
  std::unique_ptr<Connection> inner_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::migrate
