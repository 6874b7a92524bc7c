// The console over HTTPS (ConsoleOptions::tls_cert, tls_key) on real loopback sockets, with a
// self-signed certificate made here and an OpenSSL client that trusts only it: the page and
// the API are served, the tokens guard /api/ as over HTTP, the request caps hold over TLS, a
// plaintext request or a silent client is closed without holding up the next client, an
// answer read too slowly is cut off at its write time, TLS older than 1.2 is refused, and
// Start() refuses a certificate and key that do not belong together. No agent runs (as in
// server_test.cc). Every socket wait is bounded by 5 s.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/base/unique_fd.h"
#include "ferry/console/server.h"
#include "slow_reader_test_util.h"
#include "tls.h"

namespace ferry::console {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr char kToken[] = "action-token-0123456789";
constexpr char kReadToken[] = "read-token-0123456789";

// A directory of its own under the system's temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-console-tls-XXXXXX").string();
    if (::mkdtemp(tmpl.data())) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};

// A P-256 key and a self-signed certificate for 127.0.0.1 and localhost, valid for a day,
// written as PEM to `cert` and `key`. False (with a test failure) when OpenSSL fails.
bool MakeSelfSigned(const std::string& cert, const std::string& key) {
  std::unique_ptr<EVP_PKEY, KeyDeleter> pkey(EVP_EC_gen("P-256"));
  std::unique_ptr<X509, X509Deleter> x(X509_new());
  if (!pkey || !x) return false;
  X509_set_version(x.get(), 2);  // v3, for the extensions
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600);
  X509_set_pubkey(x.get(), pkey.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("ferry console test"), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x.get(), x.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (!ext) return false;
    X509_add_ext(x.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(x.get(), pkey.get(), EVP_sha256()) == 0) return false;
  std::FILE* c = std::fopen(cert.c_str(), "w");
  std::FILE* k = std::fopen(key.c_str(), "w");
  bool ok = c && k && PEM_write_X509(c, x.get()) == 1 &&
            PEM_write_PrivateKey(k, pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (c) std::fclose(c);
  if (k) std::fclose(k);
  return ok;
}

ha::ClusterConfig Config() {
  auto c = ha::ClusterConfig::Parse(json::parse(R"({"name":"t",
    "hosts": [{"name":"a","nodeid":1,"address":"127.0.0.1","dir":"/nonexistent/ferry-console-tls-test/a"}],
    "vms": []})"));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

Result<std::unique_ptr<Console>> StartConsole(const ha::ClusterConfig& config, const std::string& cert,
                                              const std::string& key,
                                              std::chrono::milliseconds deadline = kDefaultReadDeadline) {
  ConsoleOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.token = kToken;
  o.read_token = kReadToken;
  o.web_dir = FERRY_CONSOLE_WEB_DIR;
  o.chart_js = FERRY_CONSOLE_CHART_JS;
  o.tls_cert = cert;
  o.tls_key = key;
  o.read_deadline = deadline;
  auto agent = [](const ha::HostConfig&, const json&) -> Result<json> { return NotFound("no agent in this test"); };
  auto drill = [](const std::string&, const std::string&) -> Result<json> { return Internal("no drills in this test"); };
  return Console::Start(config, o, agent, drill);
}

// A console with a fresh self-signed certificate, in its own temp dir.
struct TlsConsole {
  TempDir dir;
  std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  ha::ClusterConfig config = Config();
  std::unique_ptr<Console> console;

  explicit TlsConsole(std::chrono::milliseconds deadline = kDefaultReadDeadline) {
    EXPECT_FALSE(dir.path().empty());
    EXPECT_TRUE(MakeSelfSigned(cert, key));
    auto c = StartConsole(config, cert, key, deadline);
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (c.ok()) console = std::move(*c);
  }
  int port() const { return console ? console->port() : 0; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port()); }
};

UniqueFd Connect(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (!fd.valid()) return fd;
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
  return fd;
}

struct Answer {
  std::string error;    // why there was no HTTP answer (the handshake failed, ...)
  std::string version;  // the TLS version negotiated
  int status = 0;       // 0: no HTTP answer
  std::string body;
  json Json() const { return json::parse(body, nullptr, false); }
};

void ParseHttp(const std::string& got, Answer& r) {
  if (got.rfind("HTTP/1.1 ", 0) != 0 || got.size() < 12) return;
  r.status = std::atoi(got.c_str() + 9);
  const size_t blank = got.find("\r\n\r\n");
  if (blank != std::string::npos) r.body = got.substr(blank + 4);
}

std::string OpenSslErrors() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += std::string(out.empty() ? "" : "; ") + buf;
  }
  return out;
}

Answer Failed(std::string why) {
  Answer a;
  a.error = std::move(why);
  return a;
}

struct ClientOptions {
  int max_version = 0;          // 0: the newest
  bool allow_old = false;       // security level 0, so that the client itself would offer TLS 1.0/1.1
};

// `request` over TLS, trusting only `ca_file`, checking the certificate names 127.0.0.1;
// the answer read to the end of the connection.
Answer HttpsExchange(int port, const std::string& ca_file, const std::string& request, ClientOptions opt = {}) {
  Answer r;
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return Failed("SSL_CTX_new: " + OpenSslErrors());
  if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1) return Failed("CA: " + OpenSslErrors());
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (opt.max_version) SSL_CTX_set_max_proto_version(ctx.get(), opt.max_version);
  if (opt.allow_old) {
    SSL_CTX_set_security_level(ctx.get(), 0);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_cipher_list(ctx.get(), "DEFAULT:@SECLEVEL=0");
  }
  UniqueFd fd = Connect(port);
  if (!fd.valid()) return Failed("connect failed");
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd.get());
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), "127.0.0.1");
  if (SSL_connect(ssl.get()) != 1) return Failed("handshake: " + OpenSslErrors());
  if (SSL_get_verify_result(ssl.get()) != X509_V_OK) return Failed("the server's certificate did not verify");
  r.version = SSL_get_version(ssl.get());
  if (SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) != static_cast<int>(request.size())) {
    r.error = "write: " + OpenSslErrors();
  }
  std::string got;
  char buf[4096];
  for (int n; (n = SSL_read(ssl.get(), buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ParseHttp(got, r);
  if (r.status == 0 && r.error.empty()) r.error = "no HTTP answer: " + OpenSslErrors();
  return r;
}

std::string Get(const std::string& path, const std::string& host, const std::string& auth = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + (auth.empty() ? "" : "Authorization: Bearer " + auth + "\r\n") +
         "\r\n";
}

std::string Post(const std::string& path, const std::string& host, const std::string& auth, const std::string& body,
                 size_t length = std::string::npos) {
  return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + (auth.empty() ? "" : "Authorization: Bearer " + auth + "\r\n") +
         "Content-Type: application/json\r\nContent-Length: " +
         std::to_string(length == std::string::npos ? body.size() : length) + "\r\n\r\n" + body;
}

void ExpectError(const Answer& a, int status) {
  EXPECT_EQ(a.status, status) << a.error << " " << a.body;
  json j = a.Json();
  ASSERT_TRUE(j.is_object()) << a.error << " " << a.body;
  EXPECT_EQ(j["ok"], false) << a.body;
  EXPECT_FALSE(j.value("error", "").empty()) << a.body;
}

TEST(ConsoleTls, ServesThePageAndTheClusterOverHttps) {
  TlsConsole c;
  ASSERT_TRUE(c.console);
  EXPECT_TRUE(c.console->tls());
  Answer page = HttpsExchange(c.port(), c.cert, Get("/", c.host()));
  EXPECT_EQ(page.status, 200) << page.error;
  EXPECT_NE(page.body.find("<html"), std::string::npos);
  EXPECT_EQ(page.version, "TLSv1.3");
  EXPECT_EQ(HttpsExchange(c.port(), c.cert, Get("/app.js", c.host())).status, 200);
  // /api/ needs a token over HTTPS as over HTTP.
  ExpectError(HttpsExchange(c.port(), c.cert, Get("/api/cluster", c.host())), 401);
  ExpectError(HttpsExchange(c.port(), c.cert, Get("/api/cluster", c.host(), "not-the-token-0123456789")), 401);
  for (const char* token : {kReadToken, kToken}) {
    Answer a = HttpsExchange(c.port(), c.cert, Get("/api/cluster", c.host(), token));
    EXPECT_EQ(a.status, 200) << a.error << a.body;
    EXPECT_EQ(a.Json()["cluster"], "t") << a.body;
  }
  // The Host check holds too.
  ExpectError(HttpsExchange(c.port(), c.cert, Get("/", "rebind.invalid:" + std::to_string(c.port()))), 421);
}

TEST(ConsoleTls, AnActionStillNeedsTheActionToken) {
  TlsConsole c;
  ASSERT_TRUE(c.console);
  const std::string move = R"({"vm":"kv","to":"a"})";
  ExpectError(HttpsExchange(c.port(), c.cert, Post("/api/move", c.host(), "", move)), 401);
  ExpectError(HttpsExchange(c.port(), c.cert, Post("/api/move", c.host(), kReadToken, move)), 403);
  // With the token the action runs: no agent here, so it finds no quorum (409).
  Answer a = HttpsExchange(c.port(), c.cert, Post("/api/move", c.host(), kToken, move));
  ExpectError(a, 409);
  EXPECT_NE(a.Json().value("error", "").find("quorum"), std::string::npos) << a.body;
  const std::string drill = R"({"fault":"kill-vm","target":"kv"})";
  ExpectError(HttpsExchange(c.port(), c.cert, Post("/api/drill", c.host(), "", drill)), 401);
  Answer d = HttpsExchange(c.port(), c.cert, Post("/api/drill", c.host(), kToken, drill));
  ExpectError(d, 409);
  EXPECT_EQ(d.Json()["error"], "no vm named kv");
}

TEST(ConsoleTls, TheRequestCapsHoldOverTls) {
  TlsConsole c;
  ASSERT_TRUE(c.console);
  // A 10 MiB body is announced and never sent: the token is checked on the headers alone.
  ExpectError(HttpsExchange(c.port(), c.cert, Post("/api/move", c.host(), "", "", 10 << 20)), 401);
  ExpectError(HttpsExchange(c.port(), c.cert, Post("/api/move", c.host(), kToken, "", 10 << 20)), 413);
  // A request line past the budget is cut off.
  ExpectError(HttpsExchange(c.port(), c.cert, "GET /" + std::string(kMaxHeadBytes + kMaxBodyBytes + 4096, 'x')), 431);
}

TEST(ConsoleTls, APlaintextRequestIsClosedAndTheNextClientServed) {
  TlsConsole c(std::chrono::seconds(3));
  ASSERT_TRUE(c.console);
  // A silent client (no handshake at all), held open while others are served.
  UniqueFd silent = Connect(c.port());
  ASSERT_TRUE(silent.valid());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    UniqueFd plain = Connect(c.port());
    ASSERT_TRUE(plain.valid());
    const std::string req = Get("/", c.host());
    ASSERT_EQ(::send(plain.get(), req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = ::recv(plain.get(), buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
    EXPECT_EQ(got.find("HTTP/1.1"), std::string::npos) << got;  // closed (perhaps after a TLS alert), no page
    Answer a = HttpsExchange(c.port(), c.cert, Get("/", c.host()));
    EXPECT_EQ(a.status, 200) << a.error;
  }
  // Others were served while the silent client was still connected...
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  pollfd p{silent.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the silent client was dropped before its deadline";
  // ...and it is dropped at the connection's deadline.
  char byte;
  EXPECT_EQ(::recv(silent.get(), &byte, 1, 0), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(HttpsExchange(c.port(), c.cert, Get("/", c.host())).status, 200);
}

TEST(ConsoleTls, TlsOlderThan12IsRefused) {
  TlsConsole c;
  ASSERT_TRUE(c.console);
  Answer old = HttpsExchange(c.port(), c.cert, Get("/", c.host()), {.max_version = TLS1_1_VERSION, .allow_old = true});
  EXPECT_EQ(old.status, 0);
  EXPECT_NE(old.error.find("handshake"), std::string::npos) << old.error;
  Answer tls12 = HttpsExchange(c.port(), c.cert, Get("/", c.host()), {.max_version = TLS1_2_VERSION});
  EXPECT_EQ(tls12.status, 200) << tls12.error;
  EXPECT_EQ(tls12.version, "TLSv1.2");
}

TEST(ConsoleTls, StartRefusesACertificateAndKeyThatDoNotBelongTogether) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  const std::string other_cert = dir.path() + "/other-cert.pem", other_key = dir.path() + "/other-key.pem";
  const std::string junk = dir.path() + "/junk.pem";
  ASSERT_TRUE(MakeSelfSigned(cert, key));
  ASSERT_TRUE(MakeSelfSigned(other_cert, other_key));
  std::ofstream(junk) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
  ha::ClusterConfig config = Config();
  auto refused = [&](const std::string& c, const std::string& k, const std::string& why) {
    SCOPED_TRACE(c + " + " + k);
    auto r = StartConsole(config, c, k);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().message();
  };
  refused(cert, other_key, "does not match the certificate");
  refused(other_cert, key, "does not match the certificate");
  refused(cert, "", "both a certificate and its key");
  refused("", key, "both a certificate and its key");
  refused(dir.path() + "/missing.pem", key, "cannot read the TLS certificate");
  refused(cert, dir.path() + "/missing.pem", "cannot read the TLS key");
  refused(junk, key, "is not a PEM certificate");
  refused(cert, junk, "is not a PEM private key");
  refused(key, key, "is not a PEM certificate");
  // The matching pair starts, and nothing of the refused ones is left listening.
  auto ok = StartConsole(config, cert, key);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_TRUE((*ok)->tls());
}

TEST(ConsoleTls, WithoutACertificateItServesPlainHttp) {
  ha::ClusterConfig config = Config();
  auto c = StartConsole(config, "", "");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_FALSE((*c)->tls());
  TempDir dir;
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  ASSERT_TRUE(MakeSelfSigned(cert, key));
  // A TLS client gets no answer from a plain HTTP console.
  EXPECT_EQ(HttpsExchange((*c)->port(), cert, Get("/", "127.0.0.1:" + std::to_string((*c)->port()))).status, 0);
}

// The answer's write time holds over TLS as over plain HTTP (CappedStream's test): a client
// that completes the handshake, then takes 64 raw bytes every 100 ms, is cut off once the
// answer's write time is up, not when it has read everything. On a socket pair with small
// buffers: over loopback TCP the kernel takes the whole answer at once.
TEST(ConsoleTls, AnAnswerReadSlowerThanItsWriteTimeIsCutOff) {
  TempDir dir;
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  ASSERT_TRUE(MakeSelfSigned(cert, key));
  auto tls = TlsServer::Create(cert, key);
  ASSERT_TRUE(tls.ok()) << tls.status().message();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd server(sv[0]), client(sv[1]);
  ShrinkBuffers(server.get(), client.get());
  timeval tv{5, 0};  // the client's handshake waits 5 s at most
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::thread hello([&] {  // the client's side of the handshake; then it reads raw bytes
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(ctx ? SSL_new(ctx.get()) : nullptr, SSL_free);
    if (ssl && SSL_set_fd(ssl.get(), client.get()) == 1) (void)SSL_connect(ssl.get());
  });
  auto wire = (*tls)->Handshake(server.get(), std::chrono::steady_clock::now() + std::chrono::seconds(5));
  hello.join();
  ASSERT_TRUE(wire.ok()) << wire.status().message();
  CappedStream stream(**wire, 1024, std::chrono::steady_clock::now() + std::chrono::seconds(10), std::chrono::milliseconds(500));
  ExpectASlowReaderCutOff(stream, client.get());
}

}  // namespace
}  // namespace ferry::console
