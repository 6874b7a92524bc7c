// The flags that say how a connection between hosts is protected, shared by `ferry incoming`,
// `ferry migrate`, `ferry standby` and `ferry replicate` (migrate/security.h):
//   --key FILE                                  a shared key: TLS 1.3 with the key as its PSK
//   --tls-cert FILE --tls-key FILE --tls-ca FILE [--tls-peer-name NAME]   mutual certificates
//   --insecure                                  plaintext to and from other hosts (warned)
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "ferry/base/status.h"
#include "ferry/migrate/security.h"

namespace ferry::cli {

struct SecurityFlags {
  std::string key, tls_cert, tls_key, tls_ca, tls_peer_name;
  bool insecure = false;
  // Loads and checks the files; --insecure prints its warning on stderr.
  Result<migrate::Security> Load() const;
};

// Registers the flags on `cmd`; `listener` words the help for the accepting end.
void AddSecurityFlags(CLI::App* cmd, SecurityFlags* flags, bool listener);

}  // namespace ferry::cli
