// TlsServer: the console's HTTPS side, on OpenSSL 3. Create() builds the one SSL_CTX at start
// from a PEM certificate (chain) and private key, and refuses files it cannot read or parse and
// a key that does not match the certificate. Handshake() runs the server's side of the TLS
// handshake on an accepted socket, within the connection's deadline, and hands back the
// session as a Wire for a CappedStream. TLS 1.2 at least; no session tickets or resumption
// (one request per connection). Create() runs once; the server's threads then share the
// TlsServer read-only (SSL_new on a configured SSL_CTX is thread-safe), and each Wire belongs
// to the thread serving its connection. The socket stays its caller's.
#pragma once

#include <memory>
#include <string>

#include "capped_stream.h"
#include "ferry/base/status.h"

struct ssl_ctx_st;

namespace ferry::console {

class TlsServer {
 public:
  static Result<std::unique_ptr<TlsServer>> Create(const std::string& cert_file, const std::string& key_file);
  ~TlsServer();
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  // The handshake on `fd` (made non-blocking), done by `deadline`; why not, as a sentence,
  // when it fails (a plaintext HTTP request, too old a TLS version, a silent client...).
  Result<std::unique_ptr<Wire>> Handshake(int fd, Deadline deadline) const;

 private:
  explicit TlsServer(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* const ctx_;  // owned
};

}  // namespace ferry::console
