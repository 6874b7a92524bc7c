#include "ferry/migrate/tls.h"

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <cstring>

#include "ferry/base/clock.h"

namespace ferry::migrate {
namespace {

constexpr char kPskIdentity[] = "ferry-psk-v1";
constexpr char kPskLabel[] = "ferry tls13 external psk v1";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};
constexpr size_t kRecordBytes = 16384;  // TLS's largest record payload

// The error queue as text, emptied.
std::string TlsErrors() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

uint64_t Remaining(uint64_t deadline_ns) {
  const uint64_t now = MonotonicNs();
  return deadline_ns > now ? std::max<uint64_t>(1, (deadline_ns - now) / 1000000) : 1;
}

}  // namespace

struct TlsConnection::Impl {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  BIO* in = nullptr;   // bytes from the peer, for OpenSSL to read (owned by ssl)
  BIO* out = nullptr;  // bytes OpenSSL wrote, for the peer (owned by ssl)
  std::vector<uint8_t> psk;  // derived from the shared key
  std::vector<uint8_t> buf = std::vector<uint8_t>(64 * 1024);
  Side side = Side::kClient;
  bool handshaken = false;
  Connection* inner = nullptr;

  ~Impl() {
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
  }

  SSL_SESSION* PskSession(SSL* s) const {
    const SSL_CIPHER* cipher = SSL_CIPHER_find(s, kAes128GcmSha256);
    if (!cipher) return nullptr;
    SSL_SESSION* session = SSL_SESSION_new();
    if (!session) return nullptr;
    if (!SSL_SESSION_set1_master_key(session, psk.data(), psk.size()) || !SSL_SESSION_set_cipher(session, cipher) ||
        !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION)) {
      SSL_SESSION_free(session);
      return nullptr;
    }
    return session;
  }

  // Sends what OpenSSL produced.
  Status Flush(uint64_t deadline_ns) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(out, &data);
    if (n <= 0) return Status::Ok();
    Status st = inner->Write({reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n)}, {}, Remaining(deadline_ns));
    (void)BIO_reset(out);
    return st;
  }
  // Feeds OpenSSL what has arrived (at least one byte).
  Status Fill(uint64_t deadline_ns) {
    FERRY_ASSIGN_OR_RETURN(size_t n, inner->ReadSome(buf, Remaining(deadline_ns)));
    if (BIO_write(in, buf.data(), static_cast<int>(n)) != static_cast<int>(n)) return Internal("TLS: buffering failed");
    return Status::Ok();
  }

  // After an SSL call that returned `ret`: Ok to call again, or the error.
  Status Step(int ret, uint64_t deadline_ns, const char* what) {
    const int err = SSL_get_error(ssl, ret);
    FERRY_RETURN_IF_ERROR(Flush(deadline_ns));  // alerts and handshake flights go out first
    switch (err) {
      case SSL_ERROR_WANT_READ: return Fill(deadline_ns);
      case SSL_ERROR_WANT_WRITE: return Status::Ok();
      case SSL_ERROR_ZERO_RETURN:
        return Status(ErrorCode::kIo, std::string("TLS ") + what + " from " + inner->PeerAddress() + ": the peer closed the session");
      default: return Describe(what);
    }
  }

  // A TLS failure in words an operator can act on.
  Status Describe(const char* what) const {
    const std::string errors = TlsErrors();
    std::string hint;
    if (errors.find("wrong version number") != std::string::npos || errors.find("packet length too long") != std::string::npos ||
        errors.find("record layer failure") != std::string::npos) {
      hint = "the peer does not speak TLS (a ferry without --key, or not a ferry at all)";
    } else if (errors.find("binder") != std::string::npos || errors.find("decrypt error") != std::string::npos ||
               errors.find("illegal parameter") != std::string::npos || errors.find("no suitable") != std::string::npos ||
               errors.find("handshake failure") != std::string::npos) {
      hint = "the peer's key differs (both ends need the same --key)";
    } else if (errors.find("bad record mac") != std::string::npos || errors.find("decryption failed") != std::string::npos) {
      hint = "a record failed authentication: the bytes were changed on the way (or replayed)";
    }
    return Status(ErrorCode::kRefused, std::string("TLS ") + what + " with " + inner->PeerAddress() + " failed: " +
                                           (hint.empty() ? errors : hint + " (" + errors + ")"));
  }
};

namespace {

int UsePsk(SSL* ssl, const EVP_MD*, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  auto* impl = static_cast<TlsConnection::Impl*>(SSL_get_app_data(ssl));
  *sess = impl->PskSession(ssl);
  if (!*sess) return 0;
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity);
  *idlen = sizeof kPskIdentity - 1;
  return 1;
}

int FindPsk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  auto* impl = static_cast<TlsConnection::Impl*>(SSL_get_app_data(ssl));
  *sess = nullptr;
  if (idlen != sizeof kPskIdentity - 1 || std::memcmp(id, kPskIdentity, idlen) != 0) return 1;  // unknown: no PSK
  *sess = impl->PskSession(ssl);
  return *sess ? 1 : 0;
}

}  // namespace

Result<std::unique_ptr<TlsConnection>> TlsConnection::Wrap(std::unique_ptr<Connection> inner, const Key& key, Side side) {
  auto impl = std::make_unique<Impl>();
  impl->side = side;
  impl->inner = inner.get();
  // The PSK is derived from the key file (never the key itself on the wire or in TLS state).
  impl->psk.resize(32);
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()), reinterpret_cast<const unsigned char*>(kPskLabel),
            sizeof kPskLabel - 1, impl->psk.data(), &len) ||
      len != 32) {
    return Internal("TLS: deriving the PSK failed: " + TlsErrors());
  }
  impl->ctx = SSL_CTX_new(side == Side::kClient ? TLS_client_method() : TLS_server_method());
  if (!impl->ctx) return Internal("TLS: " + TlsErrors());
  SSL_CTX_set_min_proto_version(impl->ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(impl->ctx, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(impl->ctx, 0);  // no resumption: every connection proves the key afresh
  SSL_CTX_set_options(impl->ctx, SSL_OP_NO_TICKET);
  if (!SSL_CTX_set_ciphersuites(impl->ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")) {
    return Internal("TLS: " + TlsErrors());
  }
  if (side == Side::kClient) {
    SSL_CTX_set_psk_use_session_callback(impl->ctx, UsePsk);
  } else {
    SSL_CTX_set_psk_find_session_callback(impl->ctx, FindPsk);
  }
  impl->ssl = SSL_new(impl->ctx);
  if (!impl->ssl) return Internal("TLS: " + TlsErrors());
  impl->in = BIO_new(BIO_s_mem());
  impl->out = BIO_new(BIO_s_mem());
  if (!impl->in || !impl->out) return Internal("TLS: " + TlsErrors());
  BIO_set_mem_eof_return(impl->in, -1);  // empty: "want read", not end of stream
  SSL_set_bio(impl->ssl, impl->in, impl->out);
  SSL_set_app_data(impl->ssl, impl.get());
  if (side == Side::kClient) {
    SSL_set_connect_state(impl->ssl);
  } else {
    SSL_set_accept_state(impl->ssl);
  }
  return std::unique_ptr<TlsConnection>(new TlsConnection(std::move(inner), std::move(impl)));
}

TlsConnection::TlsConnection(std::unique_ptr<Connection> inner, std::unique_ptr<Impl> impl)
    : inner_(std::move(inner)), impl_(std::move(impl)) {}

TlsConnection::~TlsConnection() = default;

Status TlsConnection::Handshake(uint64_t timeout_ms) {
  const uint64_t deadline = MonotonicNs() + timeout_ms * 1000000;
  for (;;) {
    ERR_clear_error();
    const int ret = SSL_do_handshake(impl_->ssl);
    if (ret == 1) break;
    FERRY_RETURN_IF_ERROR(impl_->Step(ret, deadline, "handshake"));
    if (MonotonicNs() >= deadline) return Timeout("TLS handshake with " + PeerAddress() + " took over " + std::to_string(timeout_ms) + " ms");
  }
  FERRY_RETURN_IF_ERROR(impl_->Flush(deadline));
  if (!SSL_session_reused(impl_->ssl)) {
    return Status(ErrorCode::kRefused, "TLS handshake with " + PeerAddress() + " did not use the shared key");
  }
  impl_->handshaken = true;
  return Status::Ok();
}

Status TlsConnection::Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t timeout_ms) {
  if (!impl_->handshaken) return Status(ErrorCode::kAborted, "TLS: no handshake yet");
  const uint64_t deadline = MonotonicNs() + timeout_ms * 1000000;
  // A small header and its payload go in one record where they fit, so a frame is not split
  // into a record of its own header.
  std::vector<uint8_t> joined;
  std::span<const uint8_t> parts[2] = {a, b};
  if (!a.empty() && a.size() + b.size() <= kRecordBytes) {
    joined.reserve(a.size() + b.size());
    joined.insert(joined.end(), a.begin(), a.end());
    joined.insert(joined.end(), b.begin(), b.end());
    parts[0] = joined;
    parts[1] = {};
  }
  for (auto part : parts) {
    size_t done = 0;
    while (done < part.size()) {
      // In slices, so the encrypted bytes are sent as they are made rather than all at once.
      const size_t slice = std::min<size_t>(part.size() - done, 4 * kRecordBytes);
      size_t wrote = 0;
      ERR_clear_error();
      const int ret = SSL_write_ex(impl_->ssl, part.data() + done, slice, &wrote);
      if (ret == 1) {
        done += wrote;
        FERRY_RETURN_IF_ERROR(impl_->Flush(deadline));
        continue;
      }
      FERRY_RETURN_IF_ERROR(impl_->Step(ret, deadline, "send"));
    }
  }
  return Status::Ok();
}

Result<size_t> TlsConnection::ReadSome(std::span<uint8_t> out, uint64_t timeout_ms) {
  if (!impl_->handshaken) return Status(ErrorCode::kAborted, "TLS: no handshake yet");
  const uint64_t deadline = MonotonicNs() + timeout_ms * 1000000;
  for (;;) {
    size_t got = 0;
    ERR_clear_error();
    const int ret = SSL_read_ex(impl_->ssl, out.data(), out.size(), &got);
    if (ret == 1) return got;
    FERRY_RETURN_IF_ERROR(impl_->Step(ret, deadline, "receive"));
  }
}

Status TlsConnection::Read(std::span<uint8_t> out, uint64_t timeout_ms) {
  const uint64_t deadline = MonotonicNs() + timeout_ms * 1000000;
  size_t done = 0;
  while (done < out.size()) {
    auto n = ReadSome(out.subspan(done), Remaining(deadline));
    if (!n.ok()) {
      if (done > 0 && n.status().code() == ErrorCode::kIo) {
        return Status(ErrorCode::kIo, "receive from " + PeerAddress() + ": the stream ended " +
                                          std::to_string(out.size() - done) + " bytes short (truncated)");
      }
      return n.status();
    }
    done += *n;
  }
  return Status::Ok();
}

std::string TlsConnection::Describe() const {
  if (!impl_->handshaken) return "TLS (no handshake yet)";
  return std::string(SSL_get_version(impl_->ssl)) + " " + SSL_CIPHER_get_name(SSL_get_current_cipher(impl_->ssl));
}

}  // namespace ferry::migrate
