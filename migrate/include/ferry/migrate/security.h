// How the protocol's connections between hosts are protected (PROTOCOL.md "Layering and
// TLS"). One of:
//   - a shared key (`--key FILE`): TLS 1.3 with the key as an external PSK, then the
//     protocol's HMAC handshake inside;
//   - certificates (`--tls-cert`, `--tls-key`, `--tls-ca`): mutual TLS 1.3, each end's
//     certificate checked against the CA and the peer's name (the address dialled, or
//     `--tls-peer-name`), then the HMAC handshake inside, keyed by the TLS session's exporter;
//   - plaintext: only to and from peers on this host, or anywhere with `--insecure` (warned).
// Values, copied freely; the PEM text is checked once when loaded.
#pragma once

#include <optional>
#include <string>

#include "ferry/base/status.h"
#include "ferry/migrate/auth.h"

namespace ferry::migrate {

struct Certificates {
  std::string cert_pem;   // this end's certificate (and any intermediates after it)
  std::string key_pem;    // its private key
  std::string ca_pem;     // the CA(s) a peer's certificate must chain to
  std::string peer_name;  // the name (DNS or IP) the peer's certificate must carry; empty:
                          // a client checks the address it dials, a server only the CA
};

enum class SecurityMode { kLocalOnly, kInsecure, kKey, kCertificates };

struct Security {
  std::optional<Key> key;
  std::optional<Certificates> certs;
  bool insecure = false;  // plaintext to and from other hosts, by the operator's choice

  static Security Keyed(Key k) {
    Security s;
    s.key = std::move(k);
    return s;
  }
  SecurityMode mode() const;
  bool tls() const { return key.has_value() || certs.has_value(); }
  // "TLS 1.3, shared key" and so on, for logs and status.
  std::string Describe() const;
};

// Parses and checks PEM text: the certificate and key match, the certificate is valid now,
// the CA holds at least one certificate. A name is at most 253 characters.
Result<Certificates> ParseCertificates(std::string cert_pem, std::string key_pem, std::string ca_pem,
                                       std::string peer_name);
// Reads the three files (the key file readable by its owner only) and parses them.
Result<Certificates> LoadCertificates(const std::string& cert_file, const std::string& key_file,
                                      const std::string& ca_file, const std::string& peer_name);
// At most one of key and certificates; --insecure with either is a contradiction.
Status CheckSecurity(const Security& s);

}  // namespace ferry::migrate
