// KvLoad against an in-process fake kvstore (real UDP sockets on 127.0.0.1) that can misbehave
// the ways a migrating or failing-over service might: forget acknowledged writes, go silent,
// answer with old values, or send garbage.
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include "kv_load.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <thread>
#include <unordered_map>

namespace ferry::cli {
namespace {

namespace asio = boost::asio;
using asio::ip::udp;

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The kvstore protocol on its own thread. Counters are read by the test thread after the run.
class FakeKvServer {
 public:
  enum class Mode {
    kCorrect,
    kForget,   // key kForgottenKey: acknowledges every PUT without storing it
    kPause,    // drops request kPauseAt and everything else that arrives in the next kPauseMs
    kStale,    // GET answers the value before the newest
    kPhantom,  // GET answers a value newer than any PUT
    kGarbage,  // every 5th request is first answered by a malformed or unmatched datagram
    kSilent,   // never answers
    kRollback, // key kForgottenKey: PUTs stored but never answered; a GET shows the value, then loses it
  };
  static constexpr uint64_t kForgottenKey = 3;
  static constexpr uint64_t kPauseAt = 150;
  static constexpr uint64_t kPauseMs = 300;

  explicit FakeKvServer(Mode mode) : mode_(mode), socket_(io_, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    Receive();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeKvServer() {
    io_.stop();
    thread_.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(socket_.local_endpoint().port()); }

  std::atomic<uint64_t> forgotten_acks{0};
  std::atomic<uint64_t> garbage_sent{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> pause_began_ns{0};  // when the last reply before the pause was sent

 private:
  void Receive() {
    socket_.async_receive_from(asio::buffer(rx_), from_, [this](const boost::system::error_code& ec, size_t n) {
      if (ec) return;
      Handle(n);
      Receive();
    });
  }

  void Send(const fkv_msg& m, size_t size = FKV_MSG_BYTES) {
    auto bytes = EncodeKvMsg(m);
    std::vector<uint8_t> out(bytes.begin(), bytes.end());
    out.resize(size, 0xee);
    socket_.send_to(asio::buffer(out), from_);
  }

  void Handle(size_t n) {
    auto req = DecodeKvMsg(std::span<const uint8_t>(rx_.data(), n));
    if (!req.ok()) return;
    ++requests_;
    uint64_t now = NowNs();
    if (mode_ == Mode::kSilent) return;
    if (mode_ == Mode::kPause) {
      if (requests_ == kPauseAt) {
        pause_began_ns = last_reply_ns_;  // where the client's gap starts
        pause_until_ns_ = now + kPauseMs * 1'000'000;
      }
      if (now < pause_until_ns_) {
        ++dropped;
        return;
      }
    }
    fkv_msg reply = *req;
    reply.status = FKV_ST_OK;
    if (mode_ == Mode::kRollback && req->key == kForgottenKey) {
      if (req->op == FKV_OP_PUT) {
        store_[req->key] = req->value;
        ++dropped;
        return;
      }
      if (store_.count(req->key) != 0) {
        reply.value = store_[req->key];
        store_.erase(req->key);  // the state that answer came from is gone
      } else {
        reply.status = FKV_ST_NOT_FOUND;
      }
      Send(reply);
      return;
    }
    if (req->op == FKV_OP_PUT) {
      if (mode_ == Mode::kForget && req->key == kForgottenKey) {
        ++forgotten_acks;
      } else {
        previous_[req->key] = store_[req->key];
        store_[req->key] = req->value;
      }
    } else if (mode_ == Mode::kStale && previous_[req->key] != 0) {
      reply.value = previous_[req->key];
    } else if (mode_ == Mode::kPhantom && store_.count(req->key) != 0) {
      reply.value = store_[req->key] + 1'000'000'000;
    } else if (store_.count(req->key) != 0) {
      reply.value = store_[req->key];
    } else {
      reply.status = FKV_ST_NOT_FOUND;
    }
    if (mode_ == Mode::kGarbage && requests_ % 5 == 0) SendGarbage(reply);
    Send(reply);
    last_reply_ns_ = NowNs();
  }

  // Each variant says "error" so that a client taking it for the reply shows it.
  void SendGarbage(fkv_msg m) {
    m.status = FKV_ST_IO_ERROR;
    m.value = 0;
    switch (garbage_sent++ % 7) {
      case 0: m.magic ^= 1; return Send(m);
      case 1: return Send(m, FKV_MSG_BYTES - 1);
      case 2: return Send(m, FKV_MSG_BYTES + 1);
      case 3: m.req_id += 1'000'000'000; return Send(m);
      case 4: m.key += 1; return Send(m);
      case 5: m.op ^= 3; return Send(m);  // GET <-> PUT
      default: m.status = 9; return Send(m);
    }
  }

  const Mode mode_;
  asio::io_context io_;
  udp::socket socket_;
  std::thread thread_;
  std::array<uint8_t, 256> rx_{};
  udp::endpoint from_;
  uint64_t requests_ = 0;
  uint64_t last_reply_ns_ = 0;
  uint64_t pause_until_ns_ = 0;
  std::unordered_map<uint64_t, uint64_t> store_;
  std::unordered_map<uint64_t, uint64_t> previous_;  // 0: none
};

KvLoadOptions Options(const FakeKvServer& server, uint64_t duration_ms, uint64_t keys = 16) {
  KvLoadOptions o;
  o.server = server.address();
  o.rate = 500;
  o.duration_ms = duration_ms;
  o.keys = keys;
  o.timeout_ms = 200;
  return o;
}

KvLoadResult MustRun(const KvLoadOptions& o) {
  std::atomic<bool> stop{false};
  auto r = RunKvLoad(o, stop);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : KvLoadResult{};
}

TEST(KvMsgTest, EncodesLittleEndianFieldByField) {
  fkv_msg m{};
  m.magic = FKV_MAGIC;
  m.op = FKV_OP_PUT;
  m.status = FKV_ST_NOT_FOUND;
  m.reserved = 0x0304;
  m.req_id = 0x1122334455667788;
  m.key = 0x0102030405060708;
  m.value = 0xa0a1a2a3a4a5a6a7;
  const std::array<uint8_t, 32> expected = {
      'F',  'K',  'V',  '1',  0x02, 0x01, 0x04, 0x03,                           // magic, op, status, reserved
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,                           // req_id
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,                           // key
      0xa7, 0xa6, 0xa5, 0xa4, 0xa3, 0xa2, 0xa1, 0xa0};                          // value
  EXPECT_EQ(EncodeKvMsg(m), expected);

  auto d = DecodeKvMsg(expected);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->magic, FKV_MAGIC);
  EXPECT_EQ(d->op, FKV_OP_PUT);
  EXPECT_EQ(d->status, FKV_ST_NOT_FOUND);
  EXPECT_EQ(d->reserved, 0x0304);
  EXPECT_EQ(d->req_id, 0x1122334455667788u);
  EXPECT_EQ(d->key, 0x0102030405060708u);
  EXPECT_EQ(d->value, 0xa0a1a2a3a4a5a6a7u);
}

TEST(KvMsgTest, RoundTripsAndRejectsMalformed) {
  fkv_msg m{FKV_MAGIC, FKV_OP_GET, FKV_ST_IO_ERROR, 0xffff, ~0ull, 42, 1};
  auto bytes = EncodeKvMsg(m);
  auto d = DecodeKvMsg(bytes);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(EncodeKvMsg(*d), bytes);
  EXPECT_EQ(d->req_id, ~0ull);
  EXPECT_EQ(d->key, 42u);

  std::vector<uint8_t> v(bytes.begin(), bytes.end());
  EXPECT_FALSE(DecodeKvMsg(std::span(v).first(31)).ok());
  EXPECT_FALSE(DecodeKvMsg({}).ok());
  v.push_back(0);
  EXPECT_FALSE(DecodeKvMsg(v).ok());
  v.pop_back();
  v[3] = '2';  // "FKV2"
  EXPECT_EQ(DecodeKvMsg(v).status().code(), ErrorCode::kCorrupt);
}

TEST(KvLoadOptionsTest, RejectsBadOptions) {
  KvLoadOptions good;
  good.server = "127.0.0.1:7000";
  EXPECT_TRUE(ValidateKvLoadOptions(good).ok());
  good.server = "[::1]:7000";
  EXPECT_TRUE(ValidateKvLoadOptions(good).ok());

  auto bad = [&](auto edit) {
    KvLoadOptions o = good;
    o.server = "127.0.0.1:7000";
    edit(o);
    Status st = ValidateKvLoadOptions(o);
    EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
    return st.message();
  };
  EXPECT_NE(bad([](KvLoadOptions& o) { o.rate = 0; }).find("rate"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.rate = -5; }).find("rate"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.keys = 0; }).find("keys"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.put_percent = 101; }).find("percent"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.server = "localhost:7000"; }).find("server"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.server = "127.0.0.1"; }).find("server"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.server = "127.0.0.1:0"; }).find("port"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.server = "127.0.0.1:70000"; }).find("port"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.bind = "eth0"; }).find("bind"), std::string::npos);
  EXPECT_NE(bad([](KvLoadOptions& o) { o.bind = "::1"; }).find("IP version"), std::string::npos);

  std::atomic<bool> stop{false};
  KvLoadOptions o = good;
  o.keys = 0;
  EXPECT_FALSE(RunKvLoad(o, stop).ok());
}

TEST(KvLoadTest, CorrectServerPasses) {
  FakeKvServer server(FakeKvServer::Mode::kCorrect);
  KvLoadOptions o = Options(server, 1000);
  o.bind = "127.0.0.1";
  KvLoadResult r = MustRun(o);
  EXPECT_GE(r.sent, 450u);
  EXPECT_LE(r.sent, 501u);
  EXPECT_EQ(r.puts_sent + r.gets_sent, r.sent);
  EXPECT_GT(r.puts_sent, r.sent * 6 / 10);
  EXPECT_LT(r.puts_sent, r.sent * 95 / 100);
  EXPECT_EQ(r.acked_puts, r.puts_sent);
  EXPECT_EQ(r.gets_answered, r.gets_sent);
  EXPECT_EQ(r.unanswered, 0u);
  EXPECT_EQ(r.bad_replies, 0u);
  EXPECT_EQ(r.stale_reads, 0u);
  EXPECT_EQ(r.lost_puts, 0u);
  EXPECT_EQ(r.verified_keys, 16u);
  EXPECT_EQ(r.unverifiable_keys, 0u);
  EXPECT_LT(r.client_gap_ms, 150);
  EXPECT_NEAR(r.duration_ms, 1000, 50);
  EXPECT_EQ(KvLoadFailure(r), "") << KvLoadResultJson(r).dump();
}

// The store is durable: a second run finds the first run's values, which are older than its own.
TEST(KvLoadTest, ASecondRunAcceptsValuesLeftByTheFirst) {
  FakeKvServer server(FakeKvServer::Mode::kCorrect);
  KvLoadOptions o = Options(server, 300, 8);
  o.put_percent = 50;
  KvLoadResult first = MustRun(o);
  EXPECT_EQ(KvLoadFailure(first), "");
  KvLoadResult second = MustRun(o);
  EXPECT_EQ(second.stale_reads, 0u) << KvLoadResultJson(second).dump();
  EXPECT_EQ(KvLoadFailure(second), "");
}

TEST(KvLoadTest, ForgottenAcknowledgedPutsAreLost) {
  FakeKvServer server(FakeKvServer::Mode::kForget);
  KvLoadResult r = MustRun(Options(server, 600, 8));
  ASSERT_GT(server.forgotten_acks.load(), 0u);
  EXPECT_EQ(r.lost_puts, server.forgotten_acks.load());
  EXPECT_EQ(r.verified_keys, 8u);
  // GETs of the key answer NOT_FOUND although PUTs of it were acknowledged.
  EXPECT_GT(r.stale_reads, 0u);
  EXPECT_NE(KvLoadFailure(r).find("lost"), std::string::npos);
}

TEST(KvLoadTest, RepliesShowingStateThatIsLaterLostAreCaught) {
  FakeKvServer server(FakeKvServer::Mode::kRollback);
  KvLoadOptions o = Options(server, 600, 4);
  o.put_percent = 50;
  KvLoadResult r = MustRun(o);
  EXPECT_EQ(r.lost_puts, 0u) << "no PUT of that key was ever acknowledged";
  EXPECT_GT(r.stale_reads + r.unreflected_replies, 0u) << KvLoadResultJson(r).dump();
  EXPECT_NE(KvLoadFailure(r), "");
}

TEST(KvLoadTest, PauseShowsAsClientGap) {
  FakeKvServer server(FakeKvServer::Mode::kPause);
  uint64_t t0 = NowNs();
  KvLoadResult r = MustRun(Options(server, 1200));
  ASSERT_GT(server.dropped.load(), 0u);
  EXPECT_GE(r.client_gap_ms, FakeKvServer::kPauseMs);
  EXPECT_LT(r.client_gap_ms, 2 * FakeKvServer::kPauseMs);
  EXPECT_NEAR(r.gap_start_ms, (server.pause_began_ns.load() - t0) / 1e6, 20);
  EXPECT_EQ(r.unanswered, server.dropped.load());
  // Dropped PUTs were never acknowledged: nothing is lost.
  EXPECT_EQ(r.lost_puts, 0u);
  EXPECT_EQ(r.stale_reads, 0u);
  EXPECT_EQ(KvLoadFailure(r), "");
}

TEST(KvLoadTest, OldValuesAreStaleReads) {
  FakeKvServer server(FakeKvServer::Mode::kStale);
  KvLoadOptions o = Options(server, 600, 4);
  o.put_percent = 50;
  KvLoadResult r = MustRun(o);
  EXPECT_GT(r.stale_reads, 0u);
  EXPECT_FALSE(r.anomalies.empty());
  // Verification reads the value before the newest: on each key, the newest acknowledged PUT
  // (and only it) is lost.
  EXPECT_EQ(r.verified_keys, 4u);
  EXPECT_EQ(r.lost_puts, 4u);
  EXPECT_NE(KvLoadFailure(r).find("stale"), std::string::npos);
}

TEST(KvLoadTest, ValuesNeverWrittenAreStaleReads) {
  FakeKvServer server(FakeKvServer::Mode::kPhantom);
  KvLoadOptions o = Options(server, 300, 4);
  o.put_percent = 50;
  KvLoadResult r = MustRun(o);
  EXPECT_GT(r.stale_reads, 4u);  // more than the verification reads alone
  EXPECT_EQ(r.lost_puts, 0u);
  EXPECT_NE(KvLoadFailure(r).find("stale"), std::string::npos);
}

TEST(KvLoadTest, GarbageRepliesAreCountedAndIgnored) {
  FakeKvServer server(FakeKvServer::Mode::kGarbage);
  KvLoadResult r = MustRun(Options(server, 600));
  ASSERT_GT(server.garbage_sent.load(), 10u);
  EXPECT_EQ(r.bad_replies, server.garbage_sent.load());
  EXPECT_EQ(r.unanswered, 0u);
  EXPECT_EQ(r.put_errors + r.get_errors, 0u);
  EXPECT_EQ(r.acked_puts, r.puts_sent);
  EXPECT_EQ(r.gets_answered, r.gets_sent);
  EXPECT_EQ(r.stale_reads, 0u);
  EXPECT_EQ(r.lost_puts, 0u);
  EXPECT_EQ(KvLoadFailure(r), "");
}

TEST(KvLoadTest, SilentServerIsOneGapAndFails) {
  FakeKvServer server(FakeKvServer::Mode::kSilent);
  KvLoadResult r = MustRun(Options(server, 400));
  EXPECT_GT(r.sent, 150u);
  EXPECT_EQ(r.unanswered, r.sent);
  EXPECT_EQ(r.acked_puts, 0u);
  EXPECT_GE(r.client_gap_ms, r.duration_ms - 5);
  EXPECT_LT(r.gap_start_ms, 5);
  EXPECT_NE(KvLoadFailure(r).find("no PUT"), std::string::npos);
}

TEST(KvLoadTest, StopEndsAnOpenEndedRun) {
  FakeKvServer server(FakeKvServer::Mode::kCorrect);
  KvLoadOptions o = Options(server, 0);
  std::atomic<bool> stop{false};
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
  });
  auto r = RunKvLoad(o, stop);
  stopper.join();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GE(r->duration_ms, 190);
  EXPECT_LT(r->duration_ms, 400);
  EXPECT_GT(r->sent, 50u);
  EXPECT_EQ(KvLoadFailure(*r), "");
}

TEST(KvLoadTest, JsonNamesEveryField) {
  KvLoadResult r;
  r.lost_puts = 7;
  r.client_gap_ms = 12.5;
  nlohmann::json j = KvLoadResultJson(r);
  for (const char* k : {"sent", "puts_sent", "gets_sent", "acked_puts", "put_errors", "gets_answered", "stale_reads", "unreflected_replies",
                        "unanswered", "bad_replies", "lost_puts", "verified_keys", "unverifiable_keys",
                        "client_gap_ms", "gap_start_ms", "duration_ms"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["lost_puts"], 7);
  EXPECT_EQ(j["client_gap_ms"], 12.5);
}

}  // namespace
}  // namespace ferry::cli
