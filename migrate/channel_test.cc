// Channel and peer authentication over an in-memory connection pair that can corrupt, cut or
// stall the byte stream (the only fake: the OS boundary), and LoadKey on real files.
#include "ferry/migrate/channel.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "ferry/migrate/auth.h"

namespace ferry::migrate {
namespace {

// One direction of the pair. Faults apply at absolute byte offsets of the stream.
struct Pipe {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<uint8_t> bytes;       // guarded by mu
  std::vector<uint8_t> tape;       // guarded by mu: everything written, after faults
  uint64_t offset = 0;             // guarded by mu: bytes written so far
  bool writer_closed = false;      // guarded by mu: the reader sees EOF once drained
  bool reader_closed = false;      // guarded by mu
  // Faults (set before use).
  std::optional<uint64_t> flip_at;  // XOR this byte with 0x01
  std::optional<uint64_t> cut_at;   // drop this byte and everything after
  bool cut_closes = true;           // the cut ends the stream (EOF) or leaves it silent
};

class FakeConnection final : public Connection {
 public:
  FakeConnection(std::shared_ptr<Pipe> in, std::shared_ptr<Pipe> out, std::string peer, bool loopback)
      : in_(std::move(in)), out_(std::move(out)), peer_(std::move(peer)), loopback_(loopback) {}
  ~FakeConnection() override { Close(); }

  Status Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t) override {
    std::lock_guard lock(out_->mu);
    if (out_->writer_closed || out_->reader_closed) {
      return Status(ErrorCode::kIo, "send to " + peer_ + ": the connection is closed");
    }
    for (auto part : {a, b}) {
      for (uint8_t byte : part) {
        uint64_t at = out_->offset++;
        if (out_->cut_at && at >= *out_->cut_at) {
          if (out_->cut_closes) out_->writer_closed = true;
          continue;
        }
        if (out_->flip_at && at == *out_->flip_at) byte ^= 0x01;
        out_->bytes.push_back(byte);
        out_->tape.push_back(byte);
      }
    }
    out_->cv.notify_all();
    return Status::Ok();
  }

  Status Read(std::span<uint8_t> out, uint64_t timeout_ms) override {
    std::unique_lock lock(in_->mu);
    auto ready = [&] { return in_->bytes.size() >= out.size() || in_->writer_closed || in_->reader_closed; };
    if (timeout_ms == 0) {
      in_->cv.wait(lock, ready);
    } else if (!in_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready)) {
      return Timeout("receive from " + peer_ + ": nothing for " + std::to_string(timeout_ms) + " ms");
    }
    if (in_->reader_closed) return Status(ErrorCode::kAborted, "receive from " + peer_ + ": closed");
    if (in_->bytes.size() < out.size()) {
      return Status(ErrorCode::kIo, "receive from " + peer_ + ": the peer closed the connection after " +
                                        std::to_string(in_->bytes.size()) + " of " + std::to_string(out.size()) +
                                        " bytes");
    }
    std::copy_n(in_->bytes.begin(), out.size(), out.begin());
    in_->bytes.erase(in_->bytes.begin(), in_->bytes.begin() + static_cast<ptrdiff_t>(out.size()));
    return Status::Ok();
  }

  // Like a TCP close: what was written still reaches the peer, then it sees EOF.
  void Close() override {
    for (auto& [pipe, reader] : {std::pair{in_.get(), true}, std::pair{out_.get(), false}}) {
      std::lock_guard lock(pipe->mu);
      (reader ? pipe->reader_closed : pipe->writer_closed) = true;
      pipe->cv.notify_all();
    }
  }
  std::string PeerAddress() const override { return peer_; }
  bool PeerIsLoopback() const override { return loopback_; }

 private:
  std::shared_ptr<Pipe> in_, out_;
  std::string peer_;
  bool loopback_;
};

struct Pair {
  std::shared_ptr<Pipe> to_dst = std::make_shared<Pipe>(), to_src = std::make_shared<Pipe>();
  std::unique_ptr<FakeConnection> src, dst;
  explicit Pair(bool loopback = true) {
    src = std::make_unique<FakeConnection>(to_src, to_dst, "dst:1", loopback);
    dst = std::make_unique<FakeConnection>(to_dst, to_src, "src:2", loopback);
  }
};

struct ChannelPair {
  Pair pair;
  std::shared_ptr<Pipe> to_dst = pair.to_dst;
  Channel src{std::move(pair.src), "src control"};
  Channel dst{std::move(pair.dst), "dst control"};
  explicit ChannelPair(uint64_t timeout_ms = 2000) {
    src.set_timeout_ms(timeout_ms);
    dst.set_timeout_ms(timeout_ms);
  }
};

std::vector<uint8_t> Bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

bool Contains(const Status& st, const std::string& what) { return st.message().find(what) != std::string::npos; }

// ---- Channel ----

TEST(ChannelTest, SendReceiveRoundTripsInOrder) {
  ChannelPair c;
  auto begin = Bytes(300, 1), pages = Bytes(5000, 2);
  ASSERT_TRUE(c.src.Send(MsgType::kBegin, begin).ok());
  ASSERT_TRUE(c.src.Send(MsgType::kReady).ok());
  ASSERT_TRUE(c.src.Send(MsgType::kPages, pages).ok());
  EXPECT_EQ(c.src.frames_sent(), 3u);
  EXPECT_EQ(c.src.bytes_sent(), 3 * kHeaderSize + 300 + 5000);
  Frame f;
  ASSERT_TRUE(c.dst.Receive(&f).ok());
  EXPECT_EQ(f.type, static_cast<uint16_t>(MsgType::kBegin));
  EXPECT_EQ(f.payload, begin);
  ASSERT_TRUE(c.dst.Expect(MsgType::kReady, &f).ok());
  EXPECT_TRUE(f.payload.empty());
  ASSERT_TRUE(c.dst.Expect(MsgType::kPages, &f).ok());
  EXPECT_EQ(f.payload, pages);
  EXPECT_EQ(c.dst.frames_received(), 3u);
  EXPECT_EQ(c.dst.bytes_received(), c.src.bytes_sent());
}

TEST(ChannelTest, AFlippedPayloadByteIsAChecksumMismatch) {
  ChannelPair c;
  c.to_dst->flip_at = kHeaderSize + 17;
  ASSERT_TRUE(c.src.Send(MsgType::kBegin, Bytes(100, 3)).ok());
  Frame f;
  Status st = c.dst.Receive(&f);
  EXPECT_EQ(st.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(st, "checksum mismatch")) << st.message();
  EXPECT_EQ(c.dst.frames_received(), 0u);
}

TEST(ChannelTest, AFlippedHeaderByteIsRefusedWherever) {
  for (uint64_t at = 0; at < kHeaderSize; ++at) {
    ChannelPair c;
    c.to_dst->flip_at = at;
    ASSERT_TRUE(c.src.Send(MsgType::kBegin, Bytes(100, 4)).ok());
    c.src.Close();  // a longer announced length meets EOF, not a wait
    Frame f;
    Status st = c.dst.Receive(&f);
    EXPECT_FALSE(st.ok()) << "flip at header byte " << at;
    EXPECT_NE(st.code(), ErrorCode::kTimeout) << "flip at header byte " << at << ": " << st.message();
  }
}

TEST(ChannelTest, AStreamCutMidFrameIsAnError) {
  for (uint64_t cut : {uint64_t{0}, uint64_t{10}, uint64_t{kHeaderSize}, uint64_t{kHeaderSize + 50}}) {
    ChannelPair c;
    c.to_dst->cut_at = cut;
    ASSERT_TRUE(c.src.Send(MsgType::kBegin, Bytes(100, 5)).ok());
    Frame f;
    Status st = c.dst.Receive(&f);
    EXPECT_EQ(st.code(), ErrorCode::kIo) << "cut at " << cut << ": " << st.message();
    EXPECT_TRUE(Contains(st, "dst control")) << "the channel names itself: " << st.message();
  }
}

TEST(ChannelTest, AStalledPeerIsATimeoutNotAHang) {
  ChannelPair c(/*timeout_ms=*/50);
  c.to_dst->cut_at = kHeaderSize + 50;
  c.to_dst->cut_closes = false;  // the rest of the frame never comes, the connection stays up
  ASSERT_TRUE(c.src.Send(MsgType::kBegin, Bytes(100, 6)).ok());
  auto t0 = std::chrono::steady_clock::now();
  Frame f;
  Status st = c.dst.Receive(&f);
  EXPECT_EQ(st.code(), ErrorCode::kTimeout) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(ChannelTest, OutOfSequenceFramesAreDetected) {
  Pair p;
  Channel dst(std::move(p.dst), "dst control");
  dst.set_timeout_ms(2000);
  // Frame 0 arrives, then frame 0 again (a replay), then frame 2 (one lost).
  auto payload = Bytes(20, 7);
  auto h0 = EncodeHeader(MsgType::kBegin, 0, payload);
  ASSERT_TRUE(p.src->Write(h0, payload, 1000).ok());
  Frame f;
  ASSERT_TRUE(dst.Receive(&f).ok());
  ASSERT_TRUE(p.src->Write(h0, payload, 1000).ok());
  Status st = dst.Receive(&f);
  EXPECT_EQ(st.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(st, "frame 0 arrived where 1 was due")) << st.message();

  Pair q;
  Channel dst2(std::move(q.dst), "dst control");
  auto h2 = EncodeHeader(MsgType::kBegin, 2, payload);
  ASSERT_TRUE(q.src->Write(h2, payload, 1000).ok());
  st = dst2.Receive(&f);
  EXPECT_TRUE(Contains(st, "frame 2 arrived where 0 was due")) << st.message();
}

TEST(ChannelTest, ExpectReturnsThePeersReasonForAnError) {
  ChannelPair c;
  c.src.Fail("out of memory\x1b[2J");
  Frame f;
  Status st = c.dst.Expect(MsgType::kReady, &f);
  EXPECT_EQ(st.code(), ErrorCode::kAborted);
  EXPECT_TRUE(Contains(st, "src:2")) << st.message();
  EXPECT_TRUE(Contains(st, "gave up: out of memory?[2J")) << st.message();
  // Fail closed the sender: its next send fails instead of vanishing.
  EXPECT_FALSE(c.src.Send(MsgType::kReady).ok());
}

TEST(ChannelTest, ExpectRefusesAnotherTypeAndTakesAbortAsTheReason) {
  ChannelPair c;
  ASSERT_TRUE(c.src.Send(MsgType::kPrepared).ok());
  ASSERT_TRUE(c.src.Send(MsgType::kAbort, EncodeReason("operator cancelled")).ok());
  Frame f;
  Status st = c.dst.Expect(MsgType::kReady, &f);
  EXPECT_EQ(st.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(st, "expected a ready message, got prepared")) << st.message();
  st = c.dst.Expect(MsgType::kCommit, &f);
  EXPECT_EQ(st.code(), ErrorCode::kAborted);
  EXPECT_TRUE(Contains(st, "operator cancelled")) << st.message();
}

TEST(ChannelTest, CloseWakesABlockedReceive) {
  ChannelPair c(/*timeout_ms=*/0);  // no deadline: only Close can end the wait
  auto pending = std::async(std::launch::async, [&] {
    Frame f;
    return c.dst.Receive(&f);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c.dst.Close();
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_FALSE(pending.get().ok());
}

// ---- Authentication ----

Key MakeKey(char fill, size_t n = 32) { return Key{std::vector<uint8_t>(n, static_cast<uint8_t>(fill))}; }

struct AuthOutcome {
  Result<Session> src = Internal("not run");
  Result<Hello> dst = Internal("not run");
};

// Runs both ends of the handshake on two threads over a fresh pair.
AuthOutcome Handshake(const std::optional<Key>& src_key, const std::optional<Key>& dst_key, const Session& dst_session,
                      bool loopback = true, Role role = Role::kControl, uint32_t stream = 0,
                      const Session& src_session = {}) {
  Pair p(loopback);
  Channel src(std::move(p.src), "src control"), dst(std::move(p.dst), "dst control");
  src.set_timeout_ms(2000);
  dst.set_timeout_ms(2000);
  AuthOutcome out;
  std::thread t([&] { out.dst = AuthenticateSource(dst, dst_key, false, dst_session); });
  out.src = AuthenticateToDestination(src, src_key, role, stream, src_session);
  t.join();
  return out;
}

TEST(AuthTest, SameKeyAuthenticatesBothWays) {
  Session session = NewSession();
  auto r = Handshake(MakeKey('k'), MakeKey('k'), session);
  ASSERT_TRUE(r.src.ok()) << r.src.status().message();
  ASSERT_TRUE(r.dst.ok()) << r.dst.status().message();
  EXPECT_EQ(*r.src, session) << "the source learns the destination's session";
  EXPECT_EQ(r.dst->role, Role::kControl);
  EXPECT_TRUE(r.dst->have_key);
}

TEST(AuthTest, ADataStreamCarriesItsIndexAndTheControlSession) {
  Session session = NewSession();
  auto r = Handshake(MakeKey('k'), MakeKey('k'), session, true, Role::kData, 3, session);
  ASSERT_TRUE(r.src.ok()) << r.src.status().message();
  ASSERT_TRUE(r.dst.ok()) << r.dst.status().message();
  EXPECT_EQ(r.dst->role, Role::kData);
  EXPECT_EQ(r.dst->stream, 3u);
  EXPECT_EQ(r.dst->session, session);
}

TEST(AuthTest, DifferentKeysFailOnBothSides) {
  auto r = Handshake(MakeKey('a'), MakeKey('b'), NewSession());
  ASSERT_FALSE(r.src.ok());
  ASSERT_FALSE(r.dst.ok());
  EXPECT_TRUE(Contains(r.src.status(), "authentication failed")) << r.src.status().message();
  EXPECT_TRUE(Contains(r.dst.status(), "authentication failed")) << r.dst.status().message();
  // Keys of different lengths that share a prefix are different keys.
  r = Handshake(MakeKey('a', 32), MakeKey('a', 33), NewSession());
  EXPECT_FALSE(r.src.ok());
  EXPECT_FALSE(r.dst.ok());
}

TEST(AuthTest, ASourceWithoutAKeyIsRefusedByADestinationWithOne) {
  auto r = Handshake(std::nullopt, MakeKey('k'), NewSession());
  ASSERT_FALSE(r.src.ok());
  ASSERT_FALSE(r.dst.ok());
  EXPECT_TRUE(Contains(r.dst.status(), "authentication required")) << r.dst.status().message();
  EXPECT_TRUE(Contains(r.src.status(), "gave up")) << r.src.status().message();
}

TEST(AuthTest, ASourceWithAKeyRefusesADestinationWithout) {
  auto r = Handshake(MakeKey('k'), std::nullopt, NewSession());
  ASSERT_FALSE(r.src.ok());
  ASSERT_FALSE(r.dst.ok());
  EXPECT_TRUE(Contains(r.dst.status(), "no --key")) << r.dst.status().message();
  EXPECT_TRUE(Contains(r.src.status(), "gave up")) << r.src.status().message();
}

TEST(AuthTest, KeylessIsAllowedForLoopbackPeersOnly) {
  Session session = NewSession();
  auto r = Handshake(std::nullopt, std::nullopt, session, /*loopback=*/true);
  ASSERT_TRUE(r.src.ok()) << r.src.status().message();
  ASSERT_TRUE(r.dst.ok()) << r.dst.status().message();
  EXPECT_EQ(*r.src, session);
  EXPECT_FALSE(r.dst->have_key);

  r = Handshake(std::nullopt, std::nullopt, session, /*loopback=*/false);
  ASSERT_FALSE(r.dst.ok());
  ASSERT_FALSE(r.src.ok());
  EXPECT_TRUE(Contains(r.dst.status(), "loopback")) << r.dst.status().message();
  EXPECT_TRUE(Contains(r.src.status(), "loopback")) << "the source is told why: " << r.src.status().message();
}

// Plays the source by hand: sends `hello`, reads the challenge, answers with `auth`.
Result<Hello> ForgedSource(const Hello& hello, const std::vector<uint8_t>& auth_payload, const Key& dst_key) {
  Pair p;
  Channel src(std::move(p.src), "src control"), dst(std::move(p.dst), "dst control");
  src.set_timeout_ms(2000);
  dst.set_timeout_ms(2000);
  Result<Hello> out = Internal("not run");
  std::thread t([&] { out = AuthenticateSource(dst, dst_key, false, NewSession()); });
  Frame f;
  if (src.Send(MsgType::kHello, EncodeHello(hello)).ok() && src.Expect(MsgType::kChallenge, &f).ok()) {
    (void)src.Send(MsgType::kAuth, auth_payload);
    (void)src.Receive(&f);
  }
  src.Close();
  t.join();
  return out;
}

TEST(AuthTest, ADestinationRefusesAForgedOrReplayedProof) {
  Key key = MakeKey('k');
  Hello hello;
  hello.have_key = true;
  hello.nonce[0] = 1;
  auto r = ForgedSource(hello, std::vector<uint8_t>(kMacBytes, 0), key);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "authentication failed")) << r.status().message();

  // Record a genuine source's hello and proof, then replay both against a new challenge.
  Pair p;
  auto tape = p.to_dst;
  Channel src(std::move(p.src), "src control"), dst(std::move(p.dst), "dst control");
  Result<Hello> genuine = Internal("not run");
  std::thread t([&] { genuine = AuthenticateSource(dst, key, false, NewSession()); });
  ASSERT_TRUE(AuthenticateToDestination(src, key, Role::kControl, 0, {}).ok());
  t.join();
  ASSERT_TRUE(genuine.ok());
  std::vector<uint8_t> recorded;
  {
    std::lock_guard lock(tape->mu);
    recorded = tape->tape;
  }
  const size_t hello_len = kHeaderSize + EncodeHello({}).size();
  ASSERT_EQ(recorded.size(), hello_len + kHeaderSize + kMacBytes);
  auto replayed_hello = DecodeHello(std::span<const uint8_t>(recorded).subspan(kHeaderSize, hello_len - kHeaderSize));
  ASSERT_TRUE(replayed_hello.ok());
  std::vector<uint8_t> replayed_proof(recorded.begin() + hello_len + kHeaderSize, recorded.end());
  r = ForgedSource(*replayed_hello, replayed_proof, key);
  ASSERT_FALSE(r.ok()) << "a replayed proof was accepted";
  EXPECT_TRUE(Contains(r.status(), "authentication failed")) << r.status().message();
}

TEST(AuthTest, NewSessionsDiffer) { EXPECT_NE(NewSession(), NewSession()); }

// ---- LoadKey ----

class LoadKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "ferry-key-XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    for (auto& f : files_) ::unlink(f.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& bytes, mode_t mode) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    files_.push_back(path);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(LoadKeyTest, AcceptsAnOwnerOnlyKey) {
  std::string bytes(32, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 1);
  auto key = LoadKey(Write("good", bytes, 0600));
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_EQ(key->bytes, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  // A trailing newline (echo > file) is not part of the key.
  auto nl = LoadKey(Write("newline", std::string(16, 'x') + "\n", 0400));
  ASSERT_TRUE(nl.ok()) << nl.status().message();
  EXPECT_EQ(nl->bytes.size(), 16u);
}

TEST_F(LoadKeyTest, RefusesAKeyOthersCanRead) {
  for (mode_t mode : {0644, 0640, 0604, 0602, 0610}) {
    auto key = LoadKey(Write("open" + std::to_string(mode), std::string(32, 'k'), mode));
    ASSERT_FALSE(key.ok()) << "mode " << std::oct << mode;
    EXPECT_TRUE(Contains(key.status(), "chmod 600")) << key.status().message();
  }
}

TEST_F(LoadKeyTest, RefusesShortLongAndMissingKeys) {
  auto short_key = LoadKey(Write("short", std::string(15, 'k') + "\n", 0600));
  ASSERT_FALSE(short_key.ok());
  EXPECT_TRUE(Contains(short_key.status(), "fewer than 16 bytes")) << short_key.status().message();
  EXPECT_FALSE(LoadKey(Write("empty", "", 0600)).ok());
  EXPECT_FALSE(LoadKey(Write("long", std::string(4097, 'k'), 0600)).ok());
  EXPECT_FALSE(LoadKey(dir_ + "/missing").ok());
}

}  // namespace
}  // namespace ferry::migrate
