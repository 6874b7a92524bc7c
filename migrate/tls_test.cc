// TLS on the protocol's connections, over real loopback TCP: the key as a TLS 1.3 PSK proves
// itself both ways; a wrong key, a peer without TLS and a replayed session are refused; a
// relay that flips one byte after the handshake makes the receiver fail; and a relay that
// captures every byte finds none of the payload in it.
#include "ferry/migrate/tls.h"

#include "ferry/migrate/channel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

namespace ferry::migrate {
namespace {

Security TestKey(char fill = 'k') { return Security::Keyed(Key{std::vector<uint8_t>(32, static_cast<uint8_t>(fill))}); }

// A listener on 127.0.0.1 and one accepted connection, with the client's.
struct Pair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client, server;
};

Pair Connected(const Endpoint* via = nullptr) {
  Pair p;
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  EXPECT_TRUE(l.ok()) << l.status().message();
  p.listener = std::move(*l);
  auto at = ParseEndpoint(p.listener->LocalAddress());
  EXPECT_TRUE(at.ok());
  std::thread accept([&] {
    auto s = p.listener->Accept(5000);
    EXPECT_TRUE(s.ok()) << s.status().message();
    if (s.ok()) p.server = std::move(*s);
  });
  auto c = ConnectTcp(via ? *via : *at, 5000);
  EXPECT_TRUE(c.ok()) << c.status().message();
  if (c.ok()) p.client = std::move(*c);
  accept.join();
  return p;
}

// Both handshakes at once; their results.
std::pair<Status, Status> Handshake(TlsConnection& client, TlsConnection& server) {
  Status sst = Status::Ok();
  std::thread t([&] { sst = server.Handshake(3000); });
  Status cst = client.Handshake(3000);
  if (!cst.ok()) client.Close();  // a failed side hangs up, as the real ones do
  t.join();
  return {cst, sst};
}

// Both ends of a connected pair wrapped with the same key and handshaken.
struct Tls2 {
  std::unique_ptr<TlsConnection> client, server;
};

Tls2 Handshaken() {
  Pair p = Connected();
  auto c = TlsConnection::Wrap(std::move(p.client), TestKey(), TlsConnection::Side::kClient);
  auto s = TlsConnection::Wrap(std::move(p.server), TestKey(), TlsConnection::Side::kServer);
  EXPECT_TRUE(c.ok() && s.ok());
  if (!c.ok() || !s.ok()) return {};
  auto [cst, sst] = Handshake(**c, **s);
  EXPECT_TRUE(cst.ok()) << cst.message();
  EXPECT_TRUE(sst.ok()) << sst.message();
  return {std::move(*c), std::move(*s)};
}

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>("GUEST-SECRET-PAGE-"[i % 18]);
  return v;
}

TEST(Tls, TheSharedKeyIsAPskBothWaysAndBytesCrossIntact) {
  Tls2 t = Handshaken();
  ASSERT_TRUE(t.client && t.server);
  EXPECT_NE(t.client->Describe().find("TLSv1.3"), std::string::npos) << t.client->Describe();
  const std::vector<uint8_t> header = {1, 2, 3, 4}, body = Pattern(3 << 20);
  std::thread w([&] { EXPECT_TRUE(t.client->Write(header, body, 5000).ok()); });
  std::vector<uint8_t> got(header.size() + body.size());
  ASSERT_TRUE(t.server->Read(got, 5000).ok());
  w.join();
  EXPECT_TRUE(std::equal(header.begin(), header.end(), got.begin()));
  EXPECT_TRUE(std::equal(body.begin(), body.end(), got.begin() + header.size()));
  // And back.
  ASSERT_TRUE(t.server->Write(header, {}, 5000).ok());
  std::vector<uint8_t> back(4);
  ASSERT_TRUE(t.client->Read(back, 5000).ok());
  EXPECT_EQ(back, header);
}

// Protocol version 5: on a TLS connection a frame's checksum field is 0 and the payload is not
// hashed (the record's AEAD tag covers it); the frames still cross intact and in sequence. A
// plaintext connection still checksums every frame.
TEST(Tls, FramesOverTlsCarryNoChecksumOfTheirOwnAndCrossIntact) {
  Tls2 t = Handshaken();
  ASSERT_TRUE(t.client && t.server);
  EXPECT_TRUE(t.client->Authenticated());
  EXPECT_TRUE(t.server->Authenticated());
  TlsConnection* raw_server = t.server.get();
  Channel src(std::move(t.client), "src");
  const std::vector<uint8_t> body = Pattern(64 * 1024);
  ASSERT_TRUE(src.Send(MsgType::kPages, body).ok());
  ASSERT_TRUE(src.Send(MsgType::kPages, body).ok());
  // The first frame as it left the sender, read below the Channel.
  std::vector<uint8_t> header(kHeaderSize), payload(body.size());
  ASSERT_TRUE(raw_server->Read(header, 3000).ok());
  auto h = DecodeHeader(header);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->checksum, 0u);
  ASSERT_TRUE(raw_server->Read(payload, 3000).ok());
  EXPECT_EQ(payload, body);
  EXPECT_TRUE(VerifyPayload(header, *h, payload, /*checksummed=*/false).ok());
  EXPECT_FALSE(VerifyPayload(header, *h, payload, /*checksummed=*/true).ok()) << "a zero checksum passed as XXH3";
  // A plaintext connection is not authenticated: its frames keep their checksum.
  Pair p = Connected();
  EXPECT_FALSE(p.client->Authenticated());
  ASSERT_TRUE(p.client->Write(EncodeHeader(MsgType::kPages, 0, body), body, 3000).ok());
  ASSERT_TRUE(p.server->Read(header, 3000).ok());
  EXPECT_NE(DecodeHeader(header)->checksum, 0u);
}

TEST(Tls, AChannelOverTlsReceivesFramesInSequence) {
  Tls2 t = Handshaken();
  ASSERT_TRUE(t.client && t.server);
  Channel src(std::move(t.client), "src"), dst(std::move(t.server), "dst");
  dst.set_timeout_ms(3000);
  const std::vector<uint8_t> body = Pattern(200 * 1024);
  std::thread w([&] {
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(src.Send(MsgType::kPages, body).ok());
  });
  Frame f;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(dst.Receive(&f).ok()) << i;
    EXPECT_EQ(f.type, static_cast<uint16_t>(MsgType::kPages));
    EXPECT_EQ(f.payload, body);
  }
  w.join();
  EXPECT_EQ(dst.frames_received(), 5u);
}

// A timeout of 0 means "no limit" on every Connection (the receiver's idle control stream waits
// so while pages flow): over TLS it once meant 1 ms, and every keyed migration of a real VM
// timed out at its first sync.
TEST(Tls, ATimeoutOfZeroWaitsWithoutALimit) {
  Tls2 t = Handshaken();
  ASSERT_TRUE(t.client && t.server);
  std::thread w([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    EXPECT_TRUE(t.client->Write(Pattern(64), {}, 0).ok());
  });
  std::vector<uint8_t> got(64);
  Status st = t.server->Read(got, 0);
  w.join();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(got, Pattern(64));
}

TEST(Tls, AWrongKeyIsRefusedOnBothEnds) {
  Pair p = Connected();
  auto c = TlsConnection::Wrap(std::move(p.client), TestKey('a'), TlsConnection::Side::kClient);
  auto s = TlsConnection::Wrap(std::move(p.server), TestKey('b'), TlsConnection::Side::kServer);
  auto [cst, sst] = Handshake(**c, **s);
  EXPECT_FALSE(cst.ok());
  EXPECT_FALSE(sst.ok());
  std::printf("client: %s\nserver: %s\n", cst.message().c_str(), sst.message().c_str());
  EXPECT_NE(sst.message().find("key"), std::string::npos) << sst.message();
  EXPECT_NE(cst.message().find("TLS"), std::string::npos) << cst.message();
}

TEST(Tls, APlaintextPeerAndATlsPeerRefuseEachOther) {
  {  // plaintext client, TLS server
    Pair p = Connected();
    auto s = TlsConnection::Wrap(std::move(p.server), TestKey(), TlsConnection::Side::kServer);
    std::vector<uint8_t> hello(64, 'F');
    ASSERT_TRUE(p.client->Write(hello, {}, 2000).ok());
    Status st = (*s)->Handshake(3000);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("does not speak TLS"), std::string::npos) << st.message();
  }
  {  // TLS client, a plaintext server that answers with its own bytes and hangs up
    Pair p = Connected();
    auto c = TlsConnection::Wrap(std::move(p.client), TestKey(), TlsConnection::Side::kClient);
    std::thread plain([&] {
      std::vector<uint8_t> buf(1024);
      (void)p.server->ReadSome(buf, 3000);
      std::vector<uint8_t> reply(64, 'F');
      (void)p.server->Write(reply, {}, 2000);
      p.server->Close();
    });
    Status st = (*c)->Handshake(3000);
    plain.join();
    std::printf("TLS client against a plaintext server: %s\n", st.message().c_str());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("TLS"), std::string::npos) << st.message();
  }
}

// A relay between the two: copies bytes both ways, records the client's, and may flip one.
class Relay {
 public:
  explicit Relay(const Endpoint& to) {
    auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
    EXPECT_TRUE(l.ok());
    listener_ = std::move(*l);
    to_ = to;
    thread_ = std::thread([this] { Run(); });
  }
  ~Relay() {
    stop_ = true;
    listener_->Close();
    {
      std::lock_guard lock(mu_);
      if (a_) a_->Close();
      if (b_) b_->Close();
    }
    thread_.join();
  }
  Endpoint at() const {
    auto e = ParseEndpoint(listener_->LocalAddress());
    return *e;
  }
  void FlipAfter(size_t offset) { flip_at_ = offset; }
  std::vector<uint8_t> captured() {
    std::lock_guard lock(mu_);
    return captured_;
  }

 private:
  void Run() {
    auto a = listener_->Accept(5000);
    if (!a.ok()) return;
    auto b = ConnectTcp(to_, 5000);
    if (!b.ok()) return;
    {
      std::lock_guard lock(mu_);
      a_ = std::move(*a);
      b_ = std::move(*b);
    }
    std::thread back([this] { Copy(*b_, *a_, false); });
    Copy(*a_, *b_, true);
    b_->Close();
    a_->Close();
    back.join();
  }
  void Copy(Connection& from, Connection& to, bool record) {
    std::vector<uint8_t> buf(64 * 1024);
    while (!stop_) {
      auto n = from.ReadSome(buf, 200);
      if (!n.ok()) {
        if (n.status().code() == ErrorCode::kTimeout) continue;
        to.Close();
        return;
      }
      if (record) {
        std::lock_guard lock(mu_);
        for (size_t i = 0; i < *n; ++i) {
          if (flip_at_ && seen_ + i == flip_at_) buf[i] ^= 0x01;
        }
        seen_ += *n;
        captured_.insert(captured_.end(), buf.begin(), buf.begin() + *n);
      }
      if (!to.Write({buf.data(), *n}, {}, 2000).ok()) return;
    }
  }

  std::unique_ptr<Listener> listener_;
  Endpoint to_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::unique_ptr<Connection> a_, b_;
  std::vector<uint8_t> captured_;
  size_t seen_ = 0, flip_at_ = 0;
  std::thread thread_;
};

// Client connects through a relay to a TLS server; returns (client, server) after handshakes.
struct Relayed {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Relay> relay;
  std::unique_ptr<TlsConnection> client, server;
};

Relayed ThroughRelay(size_t flip_at = 0) {
  Relayed r;
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  EXPECT_TRUE(l.ok());
  r.listener = std::move(*l);
  auto server_at = ParseEndpoint(r.listener->LocalAddress());
  r.relay = std::make_unique<Relay>(*server_at);
  if (flip_at) r.relay->FlipAfter(flip_at);
  std::unique_ptr<Connection> server_conn;
  std::thread accept([&] {
    auto s = r.listener->Accept(5000);
    if (s.ok()) server_conn = std::move(*s);
  });
  auto c = ConnectTcp(r.relay->at(), 5000);
  EXPECT_TRUE(c.ok());
  accept.join();
  auto tc = TlsConnection::Wrap(std::move(*c), TestKey(), TlsConnection::Side::kClient);
  auto ts = TlsConnection::Wrap(std::move(server_conn), TestKey(), TlsConnection::Side::kServer);
  r.client = std::move(*tc);
  r.server = std::move(*ts);
  auto [cst, sst] = Handshake(*r.client, *r.server);
  EXPECT_TRUE(cst.ok()) << cst.message();
  EXPECT_TRUE(sst.ok()) << sst.message();
  return r;
}

TEST(Tls, ARelayThatFlipsOneByteAfterTheHandshakeMakesTheReceiverFail) {
  Relayed r = ThroughRelay(/*flip_at=*/4096);  // well past the handshake's few hundred bytes
  const std::vector<uint8_t> body = Pattern(64 * 1024);
  std::thread w([&] { (void)r.client->Write(body, {}, 3000); });
  std::vector<uint8_t> got(body.size());
  Status st = r.server->Read(got, 3000);
  r.server->Close();
  r.client->Close();
  w.join();
  ASSERT_FALSE(st.ok()) << "a changed byte was accepted";
  EXPECT_NE(st.message().find("changed on the way"), std::string::npos) << st.message();
}

TEST(Tls, TheWireCarriesNoneOfThePayload) {
  Relayed r = ThroughRelay();
  const std::vector<uint8_t> body = Pattern(256 * 1024);
  std::thread w([&] { EXPECT_TRUE(r.client->Write(body, {}, 3000).ok()); });
  std::vector<uint8_t> got(body.size());
  ASSERT_TRUE(r.server->Read(got, 3000).ok());
  w.join();
  EXPECT_EQ(got, body);
  const auto wire = r.relay->captured();
  EXPECT_GE(wire.size(), body.size());
  const std::string needle = "GUEST-SECRET-PAGE-";
  const std::string hay(wire.begin(), wire.end());
  EXPECT_EQ(hay.find(needle.substr(0, 12)), std::string::npos) << "payload bytes in the clear on the wire";
}

TEST(Tls, ARecordedSessionReplayedToAListenerIsRefused) {
  std::vector<uint8_t> recorded;
  {
    Relayed r = ThroughRelay();
    const std::vector<uint8_t> body = Pattern(4096);
    ASSERT_TRUE(r.client->Write(body, {}, 3000).ok());
    std::vector<uint8_t> got(body.size());
    ASSERT_TRUE(r.server->Read(got, 3000).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    recorded = r.relay->captured();
  }
  Pair p = Connected();
  auto s = TlsConnection::Wrap(std::move(p.server), TestKey(), TlsConnection::Side::kServer);
  ASSERT_TRUE(p.client->Write(recorded, {}, 3000).ok());
  Status st = (*s)->Handshake(3000);
  std::printf("replayed: %s\n", st.message().c_str());
  EXPECT_FALSE(st.ok()) << "a replayed handshake was accepted";
}

}  // namespace
}  // namespace ferry::migrate
