#include "tls.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "ferry/base/log.h"

namespace ferry::console {
namespace {

// OpenSSL's error queue as text, emptied.
std::string TlsErrors() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// An encrypted key would make OpenSSL ask for a passphrase on the terminal: refuse it instead.
int NoPassphrase(char*, int, int, void*) { return 0; }

// Whether a file can be opened for reading; why not otherwise.
Status Readable(const std::string& what, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return InvalidArgument("cannot read the TLS " + what + " " + path + ": " + std::strerror(errno));
  std::fclose(f);
  return Status::Ok();
}

// One TLS session on an accepted socket; the SSL is its own, the socket is not.
class TlsWire final : public Wire {
 public:
  TlsWire(SSL* ssl, int fd) : ssl_(ssl), fd_(fd) {}
  ~TlsWire() override { SSL_free(ssl_); }

  ssize_t Recv(char* buf, size_t size, int timeout_ms) override {
    const Deadline until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      ERR_clear_error();
      const int n = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(size, INT_MAX)));
      if (n > 0) return n;
      const int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_ZERO_RETURN) return 0;  // close_notify, or (IGNORE_UNEXPECTED_EOF) a bare end
      if (!Wait(err, MsUntil(until))) return -1;
    }
  }

  bool SendAll(const char* p, size_t size, Deadline deadline) override {
    for (size_t done = 0; done < size;) {
      ERR_clear_error();
      const int n = SSL_write(ssl_, p + done, static_cast<int>(std::min<size_t>(size - done, INT_MAX)));
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (!Wait(SSL_get_error(ssl_, n), IoWaitMs(deadline))) return false;
    }
    return true;
  }

  bool HasBuffered() const override { return SSL_pending(ssl_) > 0; }

  // One close_notify, not waiting for the peer's: the socket is shut down next.
  void Finish() override {
    if (broken_) return;  // OpenSSL forbids SSL_shutdown after a fatal error
    ERR_clear_error();
    (void)SSL_shutdown(ssl_);
    ERR_clear_error();
  }

  int fd() const override { return fd_; }

 private:
  // After a call that did not complete with `err`: waits (up to timeout_ms) for what OpenSSL
  // needs. False when the session failed (logged) or time ran out.
  bool Wait(int err, int timeout_ms) {
    if (err == SSL_ERROR_WANT_READ) return WaitFor(fd_, POLLIN, timeout_ms);
    if (err == SSL_ERROR_WANT_WRITE) return WaitFor(fd_, POLLOUT, timeout_ms);
    broken_ = true;
    if (err == SSL_ERROR_SSL) {
      FERRY_LOG_WARN("console: TLS error with %s: %s; closing the connection", PeerName(fd_).c_str(), TlsErrors().c_str());
    }
    // SSL_ERROR_SYSCALL: the socket failed (reset, broken pipe), as a plaintext one would.
    ERR_clear_error();
    return false;
  }

  SSL* const ssl_;
  const int fd_;
  bool broken_ = false;  // a fatal error ended the session
};

// Why a handshake failed, for the log.
std::string HandshakeFailure(int err) {
  const unsigned long e = ERR_peek_error();
  if (err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
      (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST || ERR_GET_REASON(e) == SSL_R_HTTPS_PROXY_REQUEST)) {
    ERR_clear_error();
    return "a plaintext HTTP request on the HTTPS port (this console serves https://)";
  }
  if (err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNSUPPORTED_PROTOCOL) {
    ERR_clear_error();
    return "the client offers no TLS version this console accepts (TLS 1.2 or later)";
  }
  if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN ||
      (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
    ERR_clear_error();
    return "the client closed the connection during the TLS handshake";
  }
  return "the TLS handshake failed: " + TlsErrors();
}

}  // namespace

Result<std::unique_ptr<TlsServer>> TlsServer::Create(const std::string& cert_file, const std::string& key_file) {
  FERRY_RETURN_IF_ERROR(Readable("certificate", cert_file));
  FERRY_RETURN_IF_ERROR(Readable("key", key_file));
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return Internal("cannot create a TLS context: " + TlsErrors());
  std::unique_ptr<TlsServer> server(new TlsServer(ctx));
  SSL_CTX_set_default_passwd_cb(ctx, NoPassphrase);
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return Internal("cannot require TLS 1.2: " + TlsErrors());
  // One request per connection: nothing to resume, so no tickets and no session cache.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return InvalidArgument("the TLS certificate " + cert_file + " is not a PEM certificate OpenSSL accepts: " + TlsErrors());
  }
  // The key is parsed here, so that a key that is no key and one that is not the
  // certificate's say so apart.
  std::FILE* f = std::fopen(key_file.c_str(), "r");
  if (!f) return InvalidArgument("cannot read the TLS key " + key_file + ": " + std::strerror(errno));
  EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, NoPassphrase, nullptr);
  std::fclose(f);
  if (!key) {
    return InvalidArgument("the TLS key " + key_file + " is not a PEM private key (an encrypted one is not supported): " +
                           TlsErrors());
  }
  const bool used = SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  if (!used || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    return InvalidArgument("the TLS key " + key_file + " does not match the certificate " + cert_file);
  }
  return server;
}

TlsServer::~TlsServer() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<Wire>> TlsServer::Handshake(int fd, Deadline deadline) const {
  // Non-blocking, so that every wait is a poll bounded by the deadline.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return ErrnoError("making the socket non-blocking");
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return Internal("cannot start a TLS session: " + TlsErrors());
  auto wire = std::make_unique<TlsWire>(ssl, fd);
  if (SSL_set_fd(ssl, fd) != 1) return Internal("cannot attach the TLS session to its socket: " + TlsErrors());
  for (;;) {
    ERR_clear_error();
    const int n = SSL_accept(ssl);
    if (n == 1) return std::unique_ptr<Wire>(std::move(wire));
    const int err = SSL_get_error(ssl, n);
    const short events = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (events == 0) return Refused(HandshakeFailure(err));
    if (!WaitFor(fd, events, MsUntil(deadline))) return Timeout("no TLS handshake before the connection's deadline");
  }
}

}  // namespace ferry::console
