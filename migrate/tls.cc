#include "ferry/migrate/tls.h"

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <span>

#include "ferry/base/clock.h"

namespace ferry::migrate {
namespace {

constexpr char kPskIdentity[] = "ferry-psk-v1";
constexpr char kPskLabel[] = "ferry tls13 external psk v1";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};
constexpr char kExporterLabel[] = "EXPORTER-ferry-hmac-v1";
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

// Deadlines follow Connection's convention: a timeout of 0 means none, and so does a deadline of
// 0 (kNoDeadline); Remaining() hands 0 on, so the inner connection waits without a limit too.
constexpr uint64_t kNoDeadline = 0;

uint64_t DeadlineAfter(uint64_t timeout_ms) { return timeout_ms == 0 ? kNoDeadline : MonotonicNs() + timeout_ms * 1000000; }

uint64_t Remaining(uint64_t deadline_ns) {
  if (deadline_ns == kNoDeadline) return 0;
  const uint64_t now = MonotonicNs();
  return deadline_ns > now ? std::max<uint64_t>(1, (deadline_ns - now) / 1000000) : 1;
}


// OpenSSL's bytes go through two buffers of ours (a BIO of our own, not memory BIOs): what it
// writes is appended to `out` and sent in one write per Flush; what arrives is read straight
// into `in` and OpenSSL takes it from there. So a 1 MiB write is 64 records encrypted into one
// buffer and one send, and a receive is one recv of up to 256 KiB: on this machine's
// paravirtual kernel a syscall (and the event loop around it) costs far more than a copy.
constexpr size_t kReceiveBytes = 256 * 1024;
constexpr size_t kSendBatchBytes = 256 * 1024;  // plaintext encrypted per send

struct Buffers {
  std::vector<uint8_t> out;  // ciphertext for the peer
  std::vector<uint8_t> in = std::vector<uint8_t>(kReceiveBytes);  // ciphertext from the peer
  size_t in_pos = 0, in_len = 0;
};

int BioWrite(BIO* b, const char* data, size_t len, size_t* written) {
  auto* buf = static_cast<Buffers*>(BIO_get_data(b));
  buf->out.insert(buf->out.end(), reinterpret_cast<const uint8_t*>(data), reinterpret_cast<const uint8_t*>(data) + len);
  *written = len;
  return 1;
}

int BioRead(BIO* b, char* data, size_t len, size_t* read) {
  auto* buf = static_cast<Buffers*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const size_t n = std::min(len, buf->in_len - buf->in_pos);
  if (n == 0) {
    BIO_set_retry_read(b);  // "want read": Fill() brings more
    *read = 0;
    return 0;
  }
  std::memcpy(data, buf->in.data() + buf->in_pos, n);
  buf->in_pos += n;
  *read = n;
  return 1;
}

long BioCtrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // Flush() sends; nothing else is asked of a sink
}

const BIO_METHOD* BuffersMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ferry buffers");
    if (m) {
      BIO_meth_set_write_ex(m, BioWrite);
      BIO_meth_set_read_ex(m, BioRead);
      BIO_meth_set_ctrl(m, BioCtrl);
      BIO_meth_set_create(m, [](BIO* b) {
        BIO_set_init(b, 1);
        return 1;
      });
    }
    return m;
  }();
  return method;
}

}  // namespace

struct TlsConnection::Impl {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  Buffers buffers;  // behind the BIO (owned by ssl)
  std::vector<uint8_t> psk;  // derived from the shared key
  Side side = Side::kClient;
  SecurityMode mode = SecurityMode::kKey;
  std::string peer_name;  // what the peer's certificate must name ("" for a server: CA only)
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
    if (buffers.out.empty()) return Status::Ok();
    Status st = inner->Write(buffers.out, {}, Remaining(deadline_ns));
    buffers.out.clear();  // keeps its capacity
    return st;
  }
  // Feeds OpenSSL what has arrived (at least one byte).
  Status Fill(uint64_t deadline_ns) {
    Buffers& b = buffers;
    if (b.in_pos == b.in_len) b.in_pos = b.in_len = 0;
    if (b.in_len == b.in.size()) {  // OpenSSL left a part unread: keep it at the front
      std::memmove(b.in.data(), b.in.data() + b.in_pos, b.in_len - b.in_pos);
      b.in_len -= b.in_pos;
      b.in_pos = 0;
    }
    FERRY_ASSIGN_OR_RETURN(size_t n, inner->ReadSome(std::span<uint8_t>(b.in).subspan(b.in_len), Remaining(deadline_ns)));
    b.in_len += n;
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
    auto has = [&](const char* text) { return errors.find(text) != std::string::npos; };
    const bool certs = mode == SecurityMode::kCertificates;
    std::string hint;
    const long verify = SSL_get_verify_result(ssl);
    if (has("wrong version number") || has("packet length too long") || has("record layer failure")) {
      hint = "the peer does not speak TLS (a ferry with neither --key nor certificates, or not a ferry at all)";
    } else if (certs && has("certificate verify failed") && verify != X509_V_OK) {
      hint = PeerCertificateProblem(verify);
    } else if (has("alert certificate expired")) {
      hint = "the peer refused our certificate: it has expired";
    } else if (has("alert unknown ca") || (certs && has("alert decrypt error"))) {
      hint = "the peer refused our certificate: it is not signed by the peer's --tls-ca";
    } else if (has("alert bad certificate") || has("alert certificate unknown")) {
      hint = "the peer refused our certificate (its CA or the name it expects)";
    } else if (has("alert certificate required")) {
      hint = "the peer requires a certificate and we have none (it uses certificates; give this end --tls-cert/--tls-key/--tls-ca)";
    } else if (has("peer did not return a certificate")) {
      hint = "the peer presented no certificate (it uses --key? both ends need the same kind of authentication)";
    } else if (!certs && (has("binder") || has("decrypt error") || has("illegal parameter"))) {
      hint = "the peer's key differs (both ends need the same --key)";
    } else if (has("handshake failure") || has("no suitable") || has("no shared cipher")) {
      hint = certs ? "the peer does not use certificates (it has --key? both ends need the same kind of authentication)"
                   : "the peer has no matching key (a different --key, or it uses certificates)";
    } else if (has("bad record mac") || has("decryption failed")) {
      hint = "a record failed authentication: the bytes were changed on the way (or replayed)";
    }
    return Status(ErrorCode::kDenied, std::string("TLS ") + what + " with " + inner->PeerAddress() + " failed: " +
                                           (hint.empty() ? errors : hint + " (" + errors + ")"));
  }

  std::string PeerCertificateProblem(long verify) const {
    switch (verify) {
      case X509_V_ERR_CERT_HAS_EXPIRED: return "the peer's certificate has expired";
      case X509_V_ERR_CERT_NOT_YET_VALID: return "the peer's certificate is not valid yet";
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return "the peer's certificate is not signed by our --tls-ca";
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return "the peer's certificate is not for " + peer_name + " (give --tls-peer-name if it names the host otherwise)";
      default: return std::string("the peer's certificate is refused: ") + X509_verify_cert_error_string(verify);
    }
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

namespace {

// This end's certificate (with its chain), key and trusted CAs, and mutual verification.
Status UseCertificates(SSL_CTX* ctx, const Certificates& c) {
  BIO* cert = BIO_new_mem_buf(c.cert_pem.data(), static_cast<int>(c.cert_pem.size()));
  BIO* key = BIO_new_mem_buf(c.key_pem.data(), static_cast<int>(c.key_pem.size()));
  BIO* ca = BIO_new_mem_buf(c.ca_pem.data(), static_cast<int>(c.ca_pem.size()));
  Status st = Status::Ok();
  X509* leaf = cert ? PEM_read_bio_X509(cert, nullptr, nullptr, nullptr) : nullptr;
  EVP_PKEY* pkey = key ? PEM_read_bio_PrivateKey(key, nullptr, nullptr, nullptr) : nullptr;
  if (!leaf || !pkey || SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
    st = InvalidArgument("TLS: the certificate or key cannot be used: " + TlsErrors());
  }
  while (st.ok()) {  // intermediates after the leaf
    X509* more = PEM_read_bio_X509(cert, nullptr, nullptr, nullptr);
    if (!more) break;
    if (SSL_CTX_add0_chain_cert(ctx, more) != 1) {
      X509_free(more);
      st = InvalidArgument("TLS: the certificate chain cannot be used: " + TlsErrors());
    }
  }
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int cas = 0;
  while (st.ok() && ca) {
    X509* one = PEM_read_bio_X509(ca, nullptr, nullptr, nullptr);
    if (!one) break;
    if (X509_STORE_add_cert(store, one) == 1) ++cas;
    X509_free(one);
  }
  ERR_clear_error();  // the ends of the PEM texts
  if (st.ok() && cas == 0) st = InvalidArgument("TLS: the CA file holds no usable certificate");
  X509_free(leaf);
  EVP_PKEY_free(pkey);
  BIO_free(cert);
  BIO_free(key);
  BIO_free(ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return st;
}

// The peer's certificate must carry `name`: an address or a DNS name.
Status ExpectName(SSL* ssl, const std::string& name) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  in6_addr probe{};
  const bool ip = ::inet_pton(AF_INET, name.c_str(), &probe) == 1 || ::inet_pton(AF_INET6, name.c_str(), &probe) == 1;
  const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
  if (ok != 1) return InvalidArgument("TLS: cannot check the peer's name " + name + ": " + TlsErrors());
  if (!ip) {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_is_server(ssl) == 0) SSL_set_tlsext_host_name(ssl, name.c_str());
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<TlsConnection>> TlsConnection::Wrap(std::unique_ptr<Connection> inner, const Security& security, Side side,
                                                           const std::string& dialled_host) {
  return Wrap(&inner, security, side, dialled_host);
}

Result<std::unique_ptr<TlsConnection>> TlsConnection::Wrap(std::unique_ptr<Connection>* inner_owner, const Security& security,
                                                           Side side, const std::string& dialled_host) {
  FERRY_RETURN_IF_ERROR(CheckSecurity(security));
  if (!security.tls()) return InvalidArgument("TLS needs a key or certificates");
  auto impl = std::make_unique<Impl>();
  impl->side = side;
  impl->mode = security.mode();
  impl->inner = inner_owner->get();
  impl->ctx = SSL_CTX_new(side == Side::kClient ? TLS_client_method() : TLS_server_method());
  if (!impl->ctx) return Internal("TLS: " + TlsErrors());
  SSL_CTX_set_min_proto_version(impl->ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(impl->ctx, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(impl->ctx, 0);  // no resumption: every connection proves itself afresh
  SSL_CTX_set_options(impl->ctx, SSL_OP_NO_TICKET);
  if (!SSL_CTX_set_ciphersuites(impl->ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")) {
    return Internal("TLS: " + TlsErrors());
  }
  if (security.key) {
    // The PSK is derived from the key file (never the key itself on the wire or in TLS state).
    const Key& key = *security.key;
    impl->psk.resize(32);
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()), reinterpret_cast<const unsigned char*>(kPskLabel),
              sizeof kPskLabel - 1, impl->psk.data(), &len) ||
        len != 32) {
      return Internal("TLS: deriving the PSK failed: " + TlsErrors());
    }
    if (side == Side::kClient) {
      SSL_CTX_set_psk_use_session_callback(impl->ctx, UsePsk);
    } else {
      SSL_CTX_set_psk_find_session_callback(impl->ctx, FindPsk);
    }
  } else {
    FERRY_RETURN_IF_ERROR(UseCertificates(impl->ctx, *security.certs));
    impl->peer_name = !security.certs->peer_name.empty() ? security.certs->peer_name
                      : side == Side::kClient            ? dialled_host
                                                         : "";
  }
  impl->ssl = SSL_new(impl->ctx);
  if (!impl->ssl) return Internal("TLS: " + TlsErrors());
  if (side == Side::kClient) {
    SSL_set_connect_state(impl->ssl);
  } else {
    SSL_set_accept_state(impl->ssl);
  }
  if (!impl->peer_name.empty()) FERRY_RETURN_IF_ERROR(ExpectName(impl->ssl, impl->peer_name));
  const BIO_METHOD* method = BuffersMethod();
  BIO* bio = method ? BIO_new(method) : nullptr;
  if (!bio) return Internal("TLS: " + TlsErrors());
  BIO_set_data(bio, &impl->buffers);
  SSL_set_bio(impl->ssl, bio, bio);  // one BIO both ways; ssl owns it
  SSL_set_read_ahead(impl->ssl, 1);  // take whole buffers, not a record header at a time
  SSL_set_app_data(impl->ssl, impl.get());
  return std::unique_ptr<TlsConnection>(new TlsConnection(std::move(*inner_owner), std::move(impl)));
}

TlsConnection::TlsConnection(std::unique_ptr<Connection> inner, std::unique_ptr<Impl> impl)
    : inner_(std::move(inner)), impl_(std::move(impl)) {}

TlsConnection::~TlsConnection() = default;

Status TlsConnection::Handshake(uint64_t timeout_ms) {
  const uint64_t deadline = DeadlineAfter(timeout_ms);
  for (;;) {
    ERR_clear_error();
    const int ret = SSL_do_handshake(impl_->ssl);
    if (ret == 1) break;
    FERRY_RETURN_IF_ERROR(impl_->Step(ret, deadline, "handshake"));
    if (MonotonicNs() >= deadline) return Timeout("TLS handshake with " + PeerAddress() + " took over " + std::to_string(timeout_ms) + " ms");
  }
  FERRY_RETURN_IF_ERROR(impl_->Flush(deadline));
  if (impl_->mode == SecurityMode::kKey && !SSL_session_reused(impl_->ssl)) {
    return Status(ErrorCode::kDenied, "TLS handshake with " + PeerAddress() +
                                           " did not use the shared key (the peer uses certificates? both ends need the same kind of authentication)");
  }
  if (impl_->mode == SecurityMode::kCertificates &&
      (SSL_get_verify_result(impl_->ssl) != X509_V_OK || SSL_get0_peer_certificate(impl_->ssl) == nullptr)) {
    return Status(ErrorCode::kDenied, "TLS handshake with " + PeerAddress() + " did not verify the peer's certificate");
  }
  impl_->handshaken = true;
  return Status::Ok();
}

bool TlsConnection::Authenticated() const { return impl_->handshaken; }

Status TlsConnection::Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t timeout_ms) {
  if (!impl_->handshaken) return Status(ErrorCode::kAborted, "TLS: no handshake yet");
  const uint64_t deadline = DeadlineAfter(timeout_ms);
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
      // In batches: up to 16 records encrypted into one buffer, sent with one write.
      const size_t slice = std::min<size_t>(part.size() - done, kSendBatchBytes);
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
  const uint64_t deadline = DeadlineAfter(timeout_ms);
  for (;;) {
    size_t got = 0;
    ERR_clear_error();
    const int ret = SSL_read_ex(impl_->ssl, out.data(), out.size(), &got);
    if (ret == 1) return got;
    FERRY_RETURN_IF_ERROR(impl_->Step(ret, deadline, "receive"));
  }
}

Status TlsConnection::Read(std::span<uint8_t> out, uint64_t timeout_ms) {
  const uint64_t deadline = DeadlineAfter(timeout_ms);
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

Result<Key> TlsConnection::ExportKey() const {
  if (!impl_->handshaken) return Status(ErrorCode::kAborted, "TLS: no handshake yet");
  Key key{std::vector<uint8_t>(32)};
  if (SSL_export_keying_material(impl_->ssl, key.bytes.data(), key.bytes.size(), kExporterLabel, sizeof kExporterLabel - 1,
                                 nullptr, 0, 0) != 1) {
    return Internal("TLS: exporting the session key failed: " + TlsErrors());
  }
  return key;
}

std::string TlsConnection::Describe() const {
  if (!impl_->handshaken) return "TLS (no handshake yet)";
  return std::string(SSL_get_version(impl_->ssl)) + " " + SSL_CIPHER_get_name(SSL_get_current_cipher(impl_->ssl));
}

}  // namespace ferry::migrate
