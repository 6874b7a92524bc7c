// TLS with certificates on real loopback TCP: mutual authentication against a CA with the
// peer's name checked; an unknown CA, an expired certificate, a certificate for another name,
// and a key-versus-certificate mismatch are refused on both ends with messages that say which;
// the session's exporter is the same on both ends and differs between sessions; and the whole
// path (ConnectPeer to a PeerGate) works with certificates, the HMAC handshake inside keyed by
// the exporter.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "ferry/migrate/accept.h"
#include "ferry/migrate/tls.h"
#include "test_pki.h"

namespace ferry::migrate {
namespace {

using testing::IssuedCert;
using testing::TestPki;

struct Pair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client, server;
};

Pair Connected() {
  Pair p;
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  EXPECT_TRUE(l.ok()) << l.status().message();
  p.listener = std::move(*l);
  auto at = ParseEndpoint(p.listener->LocalAddress());
  std::thread accept([&] {
    auto s = p.listener->Accept(5000);
    if (s.ok()) p.server = std::move(*s);
  });
  auto c = ConnectTcp(*at, 5000);
  if (c.ok()) p.client = std::move(*c);
  accept.join();
  return p;
}

Security Certs(const IssuedCert& mine, const std::string& ca_pem, const std::string& peer_name = "") {
  Security s;
  s.certs = Certificates{mine.cert_pem, mine.key_pem, ca_pem, peer_name};
  return s;
}

struct Outcome {
  Status client = Status::Ok(), server = Status::Ok();
  std::unique_ptr<TlsConnection> c, s;
};

// Both ends' handshakes; the client dials 127.0.0.1.
Outcome Handshake(const Security& client, const Security& server) {
  Pair p = Connected();
  Outcome o;
  auto c = TlsConnection::Wrap(std::move(p.client), client, TlsConnection::Side::kClient, "127.0.0.1");
  auto s = TlsConnection::Wrap(std::move(p.server), server, TlsConnection::Side::kServer);
  EXPECT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!c.ok() || !s.ok()) return o;
  o.c = std::move(*c);
  o.s = std::move(*s);
  std::thread t([&] {
    o.server = o.s->Handshake(3000);
    if (!o.server.ok()) o.s->Close();  // a failed side hangs up, as the real ones do
  });
  o.client = o.c->Handshake(3000);
  if (!o.client.ok()) o.c->Close();
  t.join();
  std::printf("client: %s\nserver: %s\n", o.client.message().c_str(), o.server.message().c_str());
  return o;
}

bool Has(const Status& st, const char* text) { return st.message().find(text) != std::string::npos; }

TEST(TlsCertificates, MutualCertificatesWorkAndTheExporterMatchesOnBothEnds) {
  TestPki pki;
  IssuedCert server = pki.Issue({"host-b", "127.0.0.1"}), client = pki.Issue({"host-a"});
  Outcome o = Handshake(Certs(client, pki.ca_pem()), Certs(server, pki.ca_pem()));
  ASSERT_TRUE(o.client.ok()) << o.client.message();
  ASSERT_TRUE(o.server.ok()) << o.server.message();
  EXPECT_NE(o.c->Describe().find("TLSv1.3"), std::string::npos);
  auto ck = o.c->ExportKey(), sk = o.s->ExportKey();
  ASSERT_TRUE(ck.ok() && sk.ok());
  EXPECT_EQ(ck->bytes, sk->bytes);
  EXPECT_EQ(ck->bytes.size(), 32u);
  // Bytes cross; and a second session exports another key.
  std::vector<uint8_t> msg(100000, 'x'), got(100000);
  std::thread w([&] { EXPECT_TRUE(o.c->Write(msg, {}, 3000).ok()); });
  ASSERT_TRUE(o.s->Read(got, 3000).ok());
  w.join();
  EXPECT_EQ(got, msg);
  Outcome again = Handshake(Certs(client, pki.ca_pem()), Certs(server, pki.ca_pem()));
  ASSERT_TRUE(again.client.ok());
  EXPECT_NE(again.c->ExportKey()->bytes, ck->bytes);
}

// A client learns that the server refused its certificate at its first read: in TLS 1.3 the
// client's handshake ends before the server has checked the client's certificate.
Status FirstRead(Outcome& o) {
  if (!o.client.ok()) return o.client;
  std::vector<uint8_t> buf(16);
  return o.c->Read(buf, 3000);
}

TEST(TlsCertificates, ACertificateFromAnotherCaIsRefusedOnBothEnds) {
  TestPki pki;
  // A stranger CA under another name, and an impostor under the same name (its signature
  // is what fails then).
  for (const char* name : {"Stranger CA", "Ferry test CA"}) {
    SCOPED_TRACE(name);
    TestPki stranger(name);
    IssuedCert server = pki.Issue({"127.0.0.1"});
    {  // the client's certificate is not from the server's CA
      Outcome o = Handshake(Certs(stranger.Issue({"host-a"}), pki.ca_pem()), Certs(server, pki.ca_pem()));
      EXPECT_TRUE(Has(o.server, "not signed by our --tls-ca")) << o.server.message();
      Status read = FirstRead(o);
      EXPECT_TRUE(Has(read, "refused our certificate")) << read.message();
    }
    {  // the server's certificate is not from the client's CA
      Outcome o = Handshake(Certs(pki.Issue({"host-a"}), pki.ca_pem()), Certs(stranger.Issue({"127.0.0.1"}), pki.ca_pem()));
      EXPECT_TRUE(Has(o.client, "not signed by our --tls-ca")) << o.client.message();
      EXPECT_TRUE(Has(o.server, "refused our certificate")) << o.server.message();
    }
  }
}

TEST(TlsCertificates, AnExpiredCertificateIsRefusedOnBothEnds) {
  TestPki pki;
  IssuedCert expired = pki.Issue({"127.0.0.1"}, -2 * 86400, -86400);
  Outcome o = Handshake(Certs(pki.Issue({"host-a"}), pki.ca_pem()), Certs(expired, pki.ca_pem()));
  EXPECT_TRUE(Has(o.client, "has expired")) << o.client.message();
  EXPECT_TRUE(Has(o.server, "refused our certificate: it has expired")) << o.server.message();
  // And this end will not even load its own expired certificate.
  auto parsed = ParseCertificates(expired.cert_pem, expired.key_pem, pki.ca_pem(), "");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(Has(parsed.status(), "expired")) << parsed.status().message();
}

TEST(TlsCertificates, ACertificateForAnotherNameIsRefusedUnlessThatNameIsExpected) {
  TestPki pki;
  IssuedCert server = pki.Issue({"host-b"}), client = pki.Issue({"host-a"});
  Outcome wrong = Handshake(Certs(client, pki.ca_pem()), Certs(server, pki.ca_pem()));
  EXPECT_TRUE(Has(wrong.client, "is not for 127.0.0.1")) << wrong.client.message();
  EXPECT_FALSE(wrong.server.ok());
  Outcome named = Handshake(Certs(client, pki.ca_pem(), "host-b"), Certs(server, pki.ca_pem()));
  EXPECT_TRUE(named.client.ok()) << named.client.message();
  EXPECT_TRUE(named.server.ok()) << named.server.message();
  // A server that expects a client name checks it too.
  Outcome client_named = Handshake(Certs(client, pki.ca_pem(), "host-b"), Certs(server, pki.ca_pem(), "host-z"));
  EXPECT_TRUE(Has(client_named.server, "is not for host-z")) << client_named.server.message();
}

TEST(TlsCertificates, AKeyAndCertificatesRefuseEachOtherOnBothEnds) {
  TestPki pki;
  Security keyed = Security::Keyed(Key{std::vector<uint8_t>(32, 'k')});
  Security certs = Certs(pki.Issue({"127.0.0.1"}), pki.ca_pem());
  Outcome a = Handshake(keyed, certs);
  EXPECT_FALSE(a.client.ok());
  EXPECT_FALSE(a.server.ok());
  EXPECT_TRUE(Has(a.server, "no certificate") || Has(a.server, "same kind of authentication")) << a.server.message();
  Outcome b = Handshake(certs, keyed);
  EXPECT_FALSE(b.client.ok());
  EXPECT_FALSE(b.server.ok());
  EXPECT_TRUE(Has(b.client, "same kind of authentication") || Has(b.client, "--key")) << b.client.message();
}

TEST(TlsCertificates, LoadingRefusesAMismatchedKeyAndBothKindsAtOnce) {
  TestPki pki;
  IssuedCert a = pki.Issue({"host-a"}), b = pki.Issue({"host-b"});
  auto mixed = ParseCertificates(a.cert_pem, b.key_pem, pki.ca_pem(), "");
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(Has(mixed.status(), "does not belong")) << mixed.status().message();
  EXPECT_FALSE(ParseCertificates(a.cert_pem, a.key_pem, "not a pem", "").ok());
  EXPECT_FALSE(ParseCertificates("junk", a.key_pem, pki.ca_pem(), "").ok());
  Security both = Certs(a, pki.ca_pem());
  both.key = Key{std::vector<uint8_t>(32, 'k')};
  EXPECT_FALSE(CheckSecurity(both).ok());
  Security insecure_tls = Certs(a, pki.ca_pem());
  insecure_tls.insecure = true;
  EXPECT_FALSE(CheckSecurity(insecure_tls).ok());
}

TEST(TlsCertificates, ASourceAndAPeerGateAuthenticateWithCertificatesEndToEnd) {
  TestPki pki;
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  ASSERT_TRUE(l.ok());
  auto at = ParseEndpoint((*l)->LocalAddress());
  PeerGateOptions o;
  o.security = Certs(pki.Issue({"127.0.0.1"}), pki.ca_pem());
  o.session = NewSession();
  o.who = "test";
  auto gate = PeerGate::Start(**l, o);
  ASSERT_TRUE(gate.ok()) << gate.status().message();
  Session assigned{};
  auto ch = ConnectPeer(*at, "tcp", Certs(pki.Issue({"host-a"}), pki.ca_pem()), 5000, Role::kControl, 0, {}, &assigned);
  ASSERT_TRUE(ch.ok()) << ch.status().message();
  EXPECT_EQ(assigned, o.session);
  auto peer = (*gate)->Next(Role::kControl, 5000);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  // A source with a certificate from another CA gets nowhere, and the gate serves on.
  TestPki stranger;
  auto bad = ConnectPeer(*at, "tcp", Certs(stranger.Issue({"host-x"}), pki.ca_pem()), 5000, Role::kControl, 0, {}, &assigned);
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(Has(bad.status(), "refused our certificate")) << bad.status().message();
  auto again = ConnectPeer(*at, "tcp", Certs(pki.Issue({"host-a"}), pki.ca_pem()), 5000, Role::kData, 0, o.session, &assigned);
  EXPECT_TRUE(again.ok()) << again.status().message();
}

}  // namespace
}  // namespace ferry::migrate
