// PeerGate over real loopback TCP, with a key and with certificates: silent, slow and
// misbehaving strangers neither delay the real peer nor end the gate; refusals are counted;
// the gate shuts down promptly and leaves no thread behind.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/unique_fd.h"
#include "ferry/migrate/accept.h"
#include "test_pki.h"

namespace ferry::migrate {
namespace {

constexpr uint64_t kIoTimeoutMs = 20000;

Key MakeKey(char c) { return Key{std::vector<uint8_t>(32, static_cast<uint8_t>(c))}; }

double MsSince(uint64_t t0) { return (MonotonicNs() - t0) / 1e6; }

int TaskCount() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

bool WaitFor(const std::function<bool()>& pred, int timeout_ms) {
  uint64_t deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
  while (!pred()) {
    if (MonotonicNs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A raw TCP client (the stranger): connected, then whatever the test writes, or nothing.
UniqueFd Dial(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
  return fd;
}

void SendBytes(int fd, std::span<const uint8_t> bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

// The start of a TLS record carrying a ClientHello of 512 bytes, as a keyed source sends
// first (keyed connections are TLS; a stranger that sends this much and stalls holds its
// handshake until the deadline).
std::vector<uint8_t> TlsRecordStart() { return {0x16, 0x03, 0x01, 0x02, 0x00, 0x01}; }

// A real hello frame (as a keyless source would send first; a keyed gate refuses it as not TLS).
std::vector<uint8_t> HelloFrame() {
  Hello h;
  h.have_key = true;
  auto payload = EncodeHello(h);
  auto header = EncodeHeader(MsgType::kHello, 0, payload);
  std::vector<uint8_t> frame(header.size() + payload.size());
  std::copy(header.begin(), header.end(), frame.begin());
  std::copy(payload.begin(), payload.end(), frame.begin() + header.size());
  return frame;
}

class PeerGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
    ASSERT_TRUE(l.ok()) << l.status().message();
    listener_ = std::move(l).value();
    auto ep = ParseEndpoint(listener_->LocalAddress());
    ASSERT_TRUE(ep.ok());
    at_ = *ep;
    options_.security.key = MakeKey('k');
    options_.session = NewSession();
    options_.io_timeout_ms = kIoTimeoutMs;
    options_.who = "peer_gate_test";
  }

  std::unique_ptr<PeerGate> StartGate() {
    auto g = PeerGate::Start(*listener_, options_);
    EXPECT_TRUE(g.ok()) << g.status().message();
    return g.ok() ? std::move(g).value() : nullptr;
  }

  // A source authenticating on another thread, as `ferry migrate` does.
  std::future<Result<std::unique_ptr<Channel>>> Source(const Key& key, Role role, const Session& session = {}) {
    return std::async(std::launch::async, [this, key, role, session] {
      Session assigned{};
      return ConnectPeer(at_, "tcp", Security::Keyed(key), kIoTimeoutMs, role, 0, session, &assigned);
    });
  }

  void OpenSilent(int n) {
    for (int i = 0; i < n; ++i) {
      strangers_.push_back(Dial(at_.port));
      ASSERT_TRUE(strangers_.back().valid());
    }
  }

  // Strangers that send the first bytes of a TLS ClientHello, then stall.
  void OpenSlow(int n) {
    auto start = TlsRecordStart();
    for (int i = 0; i < n; ++i) {
      strangers_.push_back(Dial(at_.port));
      ASSERT_TRUE(strangers_.back().valid());
      SendBytes(strangers_.back().get(), start);
    }
  }

  std::unique_ptr<Listener> listener_;
  Endpoint at_;
  PeerGateOptions options_;
  std::vector<UniqueFd> strangers_;  // held open until the test ends
};

TEST_F(PeerGateTest, TheRealPeerGetsInPastSilentAndStallingStrangers) {
  // The strangers' handshake deadline outlasts the test: they hold their workers throughout.
  options_.handshake_timeout_ms = 5000;
  const int threads_before = TaskCount();
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  OpenSilent(200);
  OpenSlow(20);
  // All 220 are in handshakes (one worker thread each) before the real source connects.
  ASSERT_TRUE(WaitFor([&] { return TaskCount() >= threads_before + 1 + 220; }, 5000)) << TaskCount();

  uint64_t t0 = MonotonicNs();
  auto source = Source(*options_.security.key, Role::kControl);
  auto peer = gate->Next(Role::kControl, 10000);
  double ms = MsSince(t0);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  std::printf("the real peer got in after %.1f ms, past 220 strangers\n", ms);
  EXPECT_LT(ms, 2000) << "the strangers delayed the real peer";
  EXPECT_EQ(peer->hello.role, Role::kControl);
  auto src = source.get();
  ASSERT_TRUE(src.ok()) << src.status().message();
  EXPECT_EQ(gate->refused(), 0u);  // the strangers are still within their deadline

  // The two ends talk over the accepted channel, with the I/O timeout restored.
  ASSERT_TRUE((*src)->Send(MsgType::kReady).ok());
  Frame f;
  ASSERT_TRUE(peer->channel->Expect(MsgType::kReady, &f).ok());

  t0 = MonotonicNs();
  gate.reset();
  EXPECT_LT(MsSince(t0), 1000);
}

// Found by review: more strangers than the gate has places (each holding its place until its
// deadline) kept the real source queued in the backlog behind them, past its own deadline. A
// new arrival now takes the oldest stranger's place.
TEST_F(PeerGateTest, MoreStrangersThanPlacesDoNotKeepTheRealPeerOut) {
  // Each stranger would hold its place for 30 s: without eviction the real peer waits at least
  // that long; with it, milliseconds on a quiet machine and a few seconds beside a build.
  options_.handshake_timeout_ms = 30000;
  options_.max_handshakes = 8;
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  OpenSilent(40);  // five times the places: the last 32 wait in the backlog
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  uint64_t t0 = MonotonicNs();
  auto source = Source(*options_.security.key, Role::kControl);
  auto peer = gate->Next(Role::kControl, 15000);
  double ms = MsSince(t0);
  ASSERT_TRUE(peer.ok()) << peer.status().message() << ": queued behind the strangers until their deadlines";
  std::printf("the real peer got in after %.1f ms, past 40 strangers in 8 places\n", ms);
  EXPECT_LT(ms, 12000) << "queued behind the strangers until their deadlines (30 s each, 8 at a time)";
  ASSERT_TRUE(source.get().ok());
}

TEST_F(PeerGateTest, AWrongKeyIsRefusedAndCountedWhileTheRealPeerGetsIn) {
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  auto wrong = Source(MakeKey('x'), Role::kControl).get();
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("key"), std::string::npos) << wrong.status().message();
  auto source = Source(*options_.security.key, Role::kControl);
  auto peer = gate->Next(Role::kControl, 10000);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  ASSERT_TRUE(source.get().ok());
  EXPECT_TRUE(WaitFor([&] { return gate->refused() == 1; }, 5000)) << gate->refused();
}

TEST_F(PeerGateTest, DataPeersMustCarryTheSessionAndTheRoleMustMatch) {
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  // Both authenticate (the session is checked by the one who waits for data streams) ...
  ASSERT_TRUE(Source(*options_.security.key, Role::kData, NewSession()).get().ok());
  ASSERT_TRUE(Source(*options_.security.key, Role::kControl).get().ok());
  // ... and are refused when a data stream of this session is wanted.
  auto none = gate->Next(Role::kData, 300);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), ErrorCode::kTimeout);
  EXPECT_EQ(gate->refused(), 2u);
  auto good = Source(*options_.security.key, Role::kData, options_.session);
  auto peer = gate->Next(Role::kData, 10000);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  EXPECT_EQ(peer->hello.session, options_.session);
  ASSERT_TRUE(good.get().ok());
  EXPECT_EQ(gate->refused(), 2u);
}

TEST_F(PeerGateTest, StrangersThatResetCloseOrSendGarbageDoNotEndTheGate) {
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  auto hello = HelloFrame();
  {  // connects and closes at once
    UniqueFd fd = Dial(at_.port);
  }
  {  // connects and resets
    UniqueFd fd = Dial(at_.port);
    linger lg{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  {  // garbage instead of a hello
    UniqueFd fd = Dial(at_.port);
    std::vector<uint8_t> junk(64, 0xa5);
    SendBytes(fd.get(), junk);
    strangers_.push_back(std::move(fd));
  }
  {  // half a hello, then half-closes
    UniqueFd fd = Dial(at_.port);
    SendBytes(fd.get(), std::span(hello).first(30));
    ::shutdown(fd.get(), SHUT_WR);
    strangers_.push_back(std::move(fd));
  }
  {  // announces an 8 MiB state message before authenticating: refused before it is read
    UniqueFd fd = Dial(at_.port);
    std::vector<uint8_t> big(8u << 20);
    auto header = EncodeHeader(MsgType::kState, 0, big);
    SendBytes(fd.get(), header);
    strangers_.push_back(std::move(fd));
  }
  ASSERT_TRUE(WaitFor([&] { return gate->refused() == 5; }, 5000)) << gate->refused();
  auto source = Source(*options_.security.key, Role::kControl);
  auto peer = gate->Next(Role::kControl, 10000);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  ASSERT_TRUE(source.get().ok());
}

TEST_F(PeerGateTest, AHandshakeIsCutAtItsDeadlineInAllNotPerRead) {
  options_.handshake_timeout_ms = 600;
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  UniqueFd fd = Dial(at_.port);
  ASSERT_TRUE(fd.valid());
  auto start = TlsRecordStart();
  // Half a TLS record header after 350 ms, the rest after 700: each read finishes within
  // 600 ms, so only the whole handshake's deadline cuts it at ~600.
  uint64_t t0 = MonotonicNs();
  std::thread slow([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    (void)::send(fd.get(), start.data(), 3, MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    (void)::send(fd.get(), start.data() + 3, start.size() - 3, MSG_NOSIGNAL);
  });
  EXPECT_TRUE(WaitFor([&] { return gate->refused() == 1; }, 3000));
  double ms = MsSince(t0);
  slow.join();
  EXPECT_GE(ms, 550);
  EXPECT_LT(ms, 1100);
}

TEST_F(PeerGateTest, DestroyingTheGateWithSilentConnectionsIsPromptAndLeavesNoThreads) {
  const int threads_before = TaskCount();
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  OpenSilent(200);
  ASSERT_TRUE(WaitFor([&] { return TaskCount() >= threads_before + 1 + 200; }, 5000)) << TaskCount();
  uint64_t t0 = MonotonicNs();
  gate.reset();
  double ms = MsSince(t0);
  std::printf("destroyed the gate with 200 handshakes in flight in %.1f ms\n", ms);
  EXPECT_LT(ms, 1000);
  // Joined threads leave /proc/self/task a moment after their join returns.
  EXPECT_TRUE(WaitFor([&] { return TaskCount() == threads_before; }, 1000)) << TaskCount() << " vs " << threads_before;
}

TEST_F(PeerGateTest, ClosingTheListenerOrShuttingTheGateWakesNext) {
  {
    auto gate = StartGate();
    ASSERT_TRUE(gate);
    auto waiter = std::async(std::launch::async, [&] { return gate->Next(Role::kControl, 0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    uint64_t t0 = MonotonicNs();
    gate->Shutdown();
    auto r = waiter.get();
    EXPECT_LT(MsSince(t0), 500);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kAborted);
  }
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  auto waiter = std::async(std::launch::async, [&] { return gate->Next(Role::kControl, 0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  uint64_t t0 = MonotonicNs();
  listener_->Close();
  auto r = waiter.get();
  EXPECT_LT(MsSince(t0), 500);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kAborted);
  EXPECT_EQ(r.status().message(), "listener closed");
}

TEST_F(PeerGateTest, NextTimesOutWhenNobodyAuthenticates) {
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  OpenSilent(3);
  uint64_t t0 = MonotonicNs();
  auto r = gate->Next(Role::kControl, 300);
  double ms = MsSince(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kTimeout);
  EXPECT_GE(ms, 290);
  EXPECT_LT(ms, 1000);
}

}  // namespace
}  // namespace ferry::migrate

// Certificates mode (mTLS): the same guarantees as with a key. Silent and stalling strangers,
// and strangers holding certificates of another CA that run whole handshakes concurrently,
// neither delay the real source nor end the gate; each refused certificate is counted.

namespace ferry::migrate {
namespace {

Security CertSecurity(const testing::IssuedCert& mine, const std::string& ca_pem) {
  Security s;
  s.certs = Certificates{mine.cert_pem, mine.key_pem, ca_pem, ""};
  return s;
}

TEST_F(PeerGateTest, WithCertificatesTheRealPeerGetsInPastStrangersAndForeignCertificates) {
  testing::TestPki pki, foreign("Foreign CA");
  const auto gate_cert = pki.Issue({"127.0.0.1"}), source_cert = pki.Issue({"source"});
  const auto foreign_cert = foreign.Issue({"source"});
  options_.security = CertSecurity(gate_cert, pki.ca_pem());
  options_.handshake_timeout_ms = 5000;
  const int threads_before = TaskCount();
  auto gate = StartGate();
  ASSERT_TRUE(gate);
  OpenSilent(100);
  OpenSlow(20);
  ASSERT_TRUE(WaitFor([&] { return TaskCount() >= threads_before + 1 + 120; }, 5000)) << TaskCount();
  // Eight strangers with a foreign CA's certificates handshake at the same time as the source.
  std::vector<std::future<Result<std::unique_ptr<Channel>>>> foreigners;
  for (int i = 0; i < 8; ++i) {
    foreigners.push_back(std::async(std::launch::async, [&] {
      Session assigned{};
      return ConnectPeer(at_, "tcp", CertSecurity(foreign_cert, pki.ca_pem()), kIoTimeoutMs, Role::kControl, 0, Session{},
                         &assigned);
    }));
  }
  uint64_t t0 = MonotonicNs();
  auto source = std::async(std::launch::async, [&] {
    Session assigned{};
    return ConnectPeer(at_, "tcp", CertSecurity(source_cert, pki.ca_pem()), kIoTimeoutMs, Role::kControl, 0, Session{},
                       &assigned);
  });
  auto peer = gate->Next(Role::kControl, 10000);
  double ms = MsSince(t0);
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  std::printf("certificates: the real peer got in after %.1f ms, past 120 strangers and 8 foreign certificates\n", ms);
  EXPECT_LT(ms, 2000) << "the strangers delayed the real peer";
  auto src = source.get();
  ASSERT_TRUE(src.ok()) << src.status().message();
  for (auto& f : foreigners) EXPECT_FALSE(f.get().ok()) << "a foreign CA's certificate got in";
  EXPECT_TRUE(WaitFor([&] { return gate->refused() >= 8; }, 5000)) << gate->refused();
  ASSERT_TRUE((*src)->Send(MsgType::kReady).ok());
  Frame f;
  ASSERT_TRUE(peer->channel->Expect(MsgType::kReady, &f).ok());
  t0 = MonotonicNs();
  gate.reset();
  EXPECT_LT(MsSince(t0), 1000);
}

}  // namespace
}  // namespace ferry::migrate
