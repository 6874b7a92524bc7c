#include "security_flags.h"

#include <cstdio>

namespace ferry::cli {

Result<migrate::Security> SecurityFlags::Load() const {
  migrate::Security s;
  if (!key.empty()) {
    FERRY_ASSIGN_OR_RETURN(s.key, migrate::LoadKey(key));
  }
  if (!tls_cert.empty() || !tls_key.empty() || !tls_ca.empty()) {
    FERRY_ASSIGN_OR_RETURN(s.certs, migrate::LoadCertificates(tls_cert, tls_key, tls_ca, tls_peer_name));
  } else if (!tls_peer_name.empty()) {
    return InvalidArgument("--tls-peer-name needs --tls-cert, --tls-key and --tls-ca");
  }
  s.insecure = insecure;
  FERRY_RETURN_IF_ERROR(migrate::CheckSecurity(s));
  if (s.insecure) {
    std::fprintf(stderr, "ferry: WARNING: --insecure: guest memory, vCPU state and disk writes cross the network "
                         "in the clear, and peers on other hosts are not authenticated\n");
  }
  return s;
}

void AddSecurityFlags(CLI::App* cmd, SecurityFlags* f, bool listener) {
  cmd->add_option("--key", f->key,
                  listener ? "Shared key file (owner-only): TLS 1.3 with the key as its PSK; without it (or certificates) "
                             "only loopback peers are accepted"
                           : "Shared key file (owner-only), the same as the peer's: TLS 1.3 with the key as its PSK");
  cmd->add_option("--tls-cert", f->tls_cert, "This host's certificate (PEM): mutual TLS 1.3 instead of --key");
  cmd->add_option("--tls-key", f->tls_key, "The certificate's private key (PEM, owner-only)");
  cmd->add_option("--tls-ca", f->tls_ca, "The CA certificates (PEM) the peer's certificate must chain to");
  cmd->add_option("--tls-peer-name", f->tls_peer_name,
                  listener ? "The name (DNS or IP) a peer's certificate must carry (default: any the CA signed)"
                           : "The name (DNS or IP) the peer's certificate must carry (default: the address in --to)");
  cmd->add_flag("--insecure", f->insecure,
                listener ? "Accept plaintext peers from other hosts (warned: guest memory in the clear)"
                         : "Send in plaintext to another host (warned: guest memory in the clear)");
}

}  // namespace ferry::cli
