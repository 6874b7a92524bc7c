// StreamSet's unchanged-page check over real loopback TCP, two streams into PageSinks, round
// after round: resent pages that did not change are skipped; once resends keep changing, a
// stream stops hashing them (its cost model) and probes again later, and whatever it skips
// or hashes, the destination equals the source after every round (a page changed and changed
// back is sent each time).
#include "ferry/migrate/stream_set.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "ferry/migrate/page_sink.h"
#include "ferry/migrate/checkpoint_protocol.h"

namespace ferry::migrate {
namespace {

using hypervisor::GuestMemory;
constexpr uint64_t kPages = 2048;  // 8 MiB
constexpr uint32_t kStreams = 2;

void Fill(uint8_t* p, uint64_t pages, uint64_t salt) {
  for (uint64_t w = 0; w < pages * kPageBytes / 8; ++w) {
    const uint64_t v = (w + 1) * 0x9e3779b97f4a7c15ull ^ (salt * 0xbf58476d1ce4e5b9ull);
    std::memcpy(p + w * 8, &v, 8);
  }
}

// A source memory, a destination memory and a StreamSet between them; each Round() sends the
// whole memory and waits until every stream's receiver has applied it.
class Rounds {
 public:
  Rounds() {
    auto s = GuestMemory::Create(kPages * kPageBytes), d = GuestMemory::Create(kPages * kPageBytes);
    EXPECT_TRUE(s.ok() && d.ok());
    src_ = std::make_unique<GuestMemory>(std::move(*s));
    dst_ = std::make_unique<GuestMemory>(std::move(*d));
    auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
    EXPECT_TRUE(l.ok());
    auto at = ParseEndpoint((*l)->LocalAddress());
    std::vector<std::unique_ptr<Channel>> out;
    for (uint32_t i = 0; i < kStreams; ++i) {
      std::thread t([&] {
        auto c = (*l)->Accept(5000);
        EXPECT_TRUE(c.ok());
        if (c.ok()) in_.push_back(std::make_unique<Channel>(std::move(*c), "dst"));
      });
      auto c = ConnectTcp(*at, 5000);
      EXPECT_TRUE(c.ok());
      t.join();
      if (c.ok()) out.push_back(std::make_unique<Channel>(std::move(*c), "src"));
    }
    EncoderOptions o;
    o.compress = false;
    o.xbzrle_cache_pages = kPages;  // deltas tried too, as by default
    set_ = std::make_unique<StreamSet>(*src_, std::move(out), o);
    for (uint32_t i = 0; i < kStreams; ++i) receivers_.emplace_back([this, i] { Receive(i); });
    all_.SetRange(0, kPages);
  }
  ~Rounds() {
    (void)set_->Finish();
    for (auto& t : receivers_) t.join();
  }

  uint8_t* source() { return src_->host(); }
  StreamSet& set() { return *set_; }
  void Round() {
    ASSERT_TRUE(set_->SendRound(all_).ok());
    ASSERT_TRUE(set_->EndEpoch(++round_).ok());
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(10), [&] { return done_ == round_ * kStreams || failed_; }));
    ASSERT_FALSE(failed_);
  }
  bool Equal() { return std::memcmp(src_->host(), dst_->host(), kPages * kPageBytes) == 0; }

 private:
  void Receive(uint32_t i) {
    PageSink sink(*dst_, i, kStreams);
    Frame f;
    in_[i]->set_timeout_ms(10000);
    for (;;) {
      Status st = in_[i]->Receive(&f);
      bool ok = st.ok();
      if (ok && f.type == static_cast<uint16_t>(MsgType::kStreamEnd)) return;
      if (ok && f.type == static_cast<uint16_t>(MsgType::kPages)) ok = sink.Apply(f.payload).ok();
      std::lock_guard lock(mu_);
      if (!ok) {
        failed_ = true;
        cv_.notify_all();
        return;
      }
      if (f.type == static_cast<uint16_t>(MsgType::kEpochEnd)) {
        ++done_;
        cv_.notify_all();
      }
    }
  }

  std::unique_ptr<GuestMemory> src_, dst_;
  std::vector<std::unique_ptr<Channel>> in_;
  std::unique_ptr<StreamSet> set_;
  std::vector<std::thread> receivers_;
  Bitmap all_{kPages};
  uint64_t round_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t done_ = 0;
  bool failed_ = false;
};

TEST(StreamSetTest, ResentPagesThatDidNotChangeAreSkipped) {
  Rounds r;
  Fill(r.source(), kPages, 1);
  r.Round();
  EXPECT_EQ(r.set().pages_unchanged(), 0u);
  r.Round();  // nothing changed
  EXPECT_EQ(r.set().pages_unchanged(), kPages);
  EXPECT_EQ(r.set().unchanged_tries(), kPages);
  EXPECT_TRUE(r.Equal());
}

TEST(StreamSetTest, ResendsThatAlwaysChangeStopBeingHashedAndTheCheckComesBack) {
  Rounds r;
  for (uint64_t round = 0; round < 10; ++round) {
    Fill(r.source(), kPages, 100 + round);
    r.Round();
    ASSERT_TRUE(r.Equal()) << "round " << round;
  }
  // 9 rounds of 2048 resends, every one changed: the streams probed a few windows only.
  EXPECT_EQ(r.set().pages_unchanged(), 0u);
  EXPECT_LT(r.set().unchanged_tries(), 9 * kPages / 4) << "resends still hashed although none was unchanged";
  // Now nothing changes: within a few rounds a probe finds unchanged pages and the check is back.
  const uint64_t before = r.set().pages_unchanged();
  uint64_t last_round = 0;
  for (int round = 0; round < 6; ++round) {
    const uint64_t at = r.set().pages_unchanged();
    r.Round();
    ASSERT_TRUE(r.Equal());
    last_round = r.set().pages_unchanged() - at;
  }
  EXPECT_GT(r.set().pages_unchanged(), before);
  EXPECT_EQ(last_round, kPages) << "the check did not come back for every page";
}

// A page hashed when it held A, sent unhashed while it held B (its stream stopped hashing),
// then holding A again when hashing is back must be sent: the unhashed send forgot A's hash.
TEST(StreamSetTest, APageChangedAndChangedBackIsSentEveryTime) {
  Rounds r;
  Fill(r.source(), kPages, 1);  // A, hashed (a first send)
  r.Round();
  const std::vector<uint8_t> a(r.source(), r.source() + kPages * kPageBytes);
  for (uint64_t round = 0; round < 3; ++round) {
    Fill(r.source(), kPages, 500 + round);  // B...: the sample pays nothing, hashing stops
    r.Round();
    ASSERT_TRUE(r.Equal());
  }
  // The sample stays as it is (unchanged: hashing comes back), every other page goes back to A.
  const SampledCostModel hashed(StreamSet::kDedupeSampleLog2);
  for (uint64_t p = 0; p < kPages; ++p) {
    if (!hashed.Sampled(p)) std::memcpy(r.source() + p * kPageBytes, &a[p * kPageBytes], kPageBytes);
  }
  r.Round();
  EXPECT_TRUE(r.Equal()) << "a page back at an old content was taken for unchanged";
  r.Round();  // now every page is unchanged, and hashed
  EXPECT_TRUE(r.Equal());
  EXPECT_GT(r.set().pages_unchanged(), kPages / 2);
}

// Deltas pay, then a stretch of rewritten pages turns caching off for all but the model's
// sample, then every page that is not sampled returns to near its last cached copy while the
// destination holds something else: a delta against that copy would corrupt the page, so the
// copy the cache did not keep must have been forgotten.
TEST(StreamSetTest, ADeltaIsNeverTakenAgainstACopyTheCacheDidNotKeep) {
  Rounds r;
  auto touch = [&](uint64_t salt) {  // a few bytes of every page change
    for (uint64_t p = 0; p < kPages; ++p) r.source()[p * kPageBytes + (salt * 64 + p) % kPageBytes] ^= 0x5a;
  };
  Fill(r.source(), kPages, 1);
  r.Round();
  touch(1);
  r.Round();  // resent: now cached
  touch(3);
  r.Round();
  EXPECT_GT(r.set().counts().xbzrle, kPages / 2) << "deltas should pay on pages with a few bytes changed: tries " << r.set().counts().xbzrle_tries << " cached " << r.set().counts().cached << " raw " << r.set().counts().raw;
  const std::vector<uint8_t> cached(r.source(), r.source() + kPages * kPageBytes);
  for (uint64_t round = 0; round < 4; ++round) {
    Fill(r.source(), kPages, 400 + round);
    r.Round();
    ASSERT_TRUE(r.Equal());
  }
  const uint64_t cached_before = r.set().counts().cached;
  const SampledCostModel kept(PageEncoder::kCacheSampleLog2);
  for (uint64_t p = 0; p < kPages; ++p) {
    if (!kept.Sampled(p)) std::memcpy(r.source() + p * kPageBytes, &cached[p * kPageBytes], kPageBytes);
  }
  touch(2);
  r.Round();
  EXPECT_TRUE(r.Equal()) << "a delta was taken against a copy the destination no longer holds";
  EXPECT_GT(r.set().counts().cached, cached_before);
}

// A standby keeps its staging buffers between checkpoints for reuse, but one unusually large
// checkpoint must not pin its size (next to the replica itself) for the standby's life.
TEST(StagedPagesTest, ClearKeepsTheUsualCapacityAndGivesBackAHugeOne) {
  StagedPages s;
  s.data.resize(8u << 20);
  s.index.resize((8u << 20) / kPageBytes);
  s.Clear();
  EXPECT_TRUE(s.data.empty());
  EXPECT_GE(s.data.capacity(), 8u << 20) << "an 8 MiB checkpoint's buffer is reused";
  s.data.resize(StagedPages::kKeptBytes + kPageBytes);
  s.index.resize(s.data.size() / kPageBytes);
  s.Clear();
  EXPECT_EQ(s.data.capacity(), 0u);
  EXPECT_EQ(s.index.capacity(), 0u);
}

}  // namespace
}  // namespace ferry::migrate
