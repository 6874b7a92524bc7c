// Post-copy's switchover and completion without a VM: two GuestMemory memfds (what a VM's RAM
// is) over real loopback TCP with the protocol's connections (two data streams, the
// page-request stream and control). A pre-copy round lands half the pages; the "guest" then
// changes some of them; at the switchover the destination drops those and fetches on demand
// what a toucher (standing in for a vCPU) reads, while the background stream places the rest.
// Every page the toucher sees is the source's at the switchover, the whole memory matches at
// the end, and only the destination's report of completion followed by the source's end
// completes it. A source or destination that goes away mid-way fails the other side safely.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/page_sink.h"
#include "ferry/migrate/postcopy_destination.h"
#include "ferry/migrate/postcopy_source.h"
#include "ferry/migrate/rate_limiter.h"
#include "ferry/migrate/stream_set.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {
namespace {

using hypervisor::GuestMemory;
constexpr uint64_t kMem = 16ull << 20;
constexpr uint64_t kPages = kMem / kPageBytes;
constexpr uint32_t kStreams = 2;

struct Pair {
  std::unique_ptr<Channel> src, dst;
};

Pair Connect(Listener& listener, const std::string& name) {
  Pair p;
  auto at = ParseEndpoint(listener.LocalAddress());
  std::thread t([&] {
    auto s = listener.Accept(5000);
    if (s.ok()) p.dst = std::make_unique<Channel>(std::move(*s), name + " (destination)");
  });
  auto c = ConnectTcp(*at, 5000);
  if (c.ok()) p.src = std::make_unique<Channel>(std::move(*c), name + " (source)");
  t.join();
  if (p.src) p.src->set_timeout_ms(5000);
  if (p.dst) p.dst->set_timeout_ms(5000);
  return p;
}

void Fill(GuestMemory& m, uint64_t page, uint64_t salt) {
  uint8_t buf[kPageBytes];
  for (uint64_t w = 0; w < kPageBytes / 8; ++w) {
    const uint64_t v = (page + 1) * 0x9e3779b97f4a7c15ull ^ (w * salt);
    std::memcpy(buf + w * 8, &v, 8);
  }
  ASSERT_TRUE(m.WriteThroughFd(page * kPageBytes, buf, kPageBytes).ok());
}

class PostcopySwitchover : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = GuestMemory::Create(kMem);
    auto d = GuestMemory::Create(kMem);
    ASSERT_TRUE(s.ok() && d.ok());
    src_ = std::make_unique<GuestMemory>(std::move(*s));
    dst_ = std::make_unique<GuestMemory>(std::move(*d));
    auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
    ASSERT_TRUE(l.ok());
    listener_ = std::move(*l);
    std::vector<std::unique_ptr<Channel>> data;
    for (uint32_t i = 0; i < kStreams; ++i) {
      Pair p = Connect(*listener_, "data " + std::to_string(i));
      ASSERT_TRUE(p.src && p.dst);
      p.src->set_limiter(&limiter_);
      data.push_back(std::move(p.src));
      data_dst_.push_back(std::move(p.dst));
    }
    requests_ = Connect(*listener_, "page requests");
    control_ = Connect(*listener_, "control");
    ASSERT_TRUE(requests_.src && control_.src);
    streams_ = std::make_unique<StreamSet>(*src_, std::move(data), EncoderOptions{});
    // The guest's memory: pages 0..3/4 written, the last quarter never touched (holes).
    for (uint64_t p = 0; p < kPages * 3 / 4; ++p) Fill(*src_, p, 1);
  }

  // Lands `frames[i]` frames of stream i in the destination's memory (the pre-copy rounds).
  void ReceivePrecopy(const std::vector<uint64_t>& frames) {
    for (uint32_t i = 0; i < kStreams; ++i) {
      PageSink sink(*dst_, i, kStreams);
      Frame f;
      while (data_dst_[i]->frames_received() < frames[i]) {
        ASSERT_TRUE(data_dst_[i]->Expect(MsgType::kPages, &f).ok());
        ASSERT_TRUE(sink.Apply(f.payload).ok());
      }
    }
  }

  // After the switchover: each stream's pages placed through userfaultfd until its end.
  void StartPostcopyReceivers(PostcopyMemory* memory) {
    for (uint32_t i = 0; i < kStreams; ++i) {
      receivers_.emplace_back([this, i, memory] {
        PageSink sink(*dst_, i, kStreams);
        sink.set_postcopy(memory);
        Frame f;
        for (;;) {
          Status st = data_dst_[i]->Receive(&f);
          if (!st.ok() || f.type != static_cast<uint16_t>(MsgType::kPages)) {
            receive_end_ok_ += st.ok() && f.type == static_cast<uint16_t>(MsgType::kStreamEnd);
            return;
          }
          if (!sink.Apply(f.payload).ok()) return;
        }
      });
    }
  }

  void TearDown() override {
    for (auto& ch : data_dst_) ch->Close();
    for (auto& t : receivers_) t.join();
  }

  // Pre-copy sends every written page, then the guest changes `changed` of them (and writes
  // some holes): those and the writes are outstanding at the switchover.
  Bitmap PrecopyThenChange() {
    Bitmap written(kPages);
    written.SetRange(0, kPages * 3 / 4);
    EXPECT_TRUE(streams_->SendRound(written).ok());
    auto frames = streams_->frames_sent();
    ReceivePrecopy(frames);
    Bitmap outstanding(kPages);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 600; ++i) {
      const uint64_t p = rng() % kPages;  // some were holes: written now for the first time
      Fill(*src_, p, 2);
      outstanding.Set(p);
    }
    // A page the guest zeroed after it was sent.
    const uint8_t zero[kPageBytes] = {};
    EXPECT_TRUE(src_->WriteThroughFd(5 * kPageBytes, zero, kPageBytes).ok());
    outstanding.Set(5);
    return outstanding;
  }

  // Both ends to the destination's completion, the real source on a thread: `answer` is what
  // the destination then does on the control stream (if it completed), `may_hand_off` the
  // source's check before its end. Returns the source's result; `done`, the destination's.
  PostcopySourceResult Complete(const std::function<void()>& answer, const std::function<bool()>& may_hand_off,
                                Result<PostcopyComplete>* done) {
    Bitmap outstanding = PrecopyThenChange();
    PostcopyDestinationOptions o;
    o.io_timeout_ms = 2000;
    auto pd = PostcopyDestination::Switch(*dst_, outstanding, *requests_.dst, o);
    EXPECT_TRUE(pd.ok()) << pd.status().message();
    if (!pd.ok()) return {PostcopyOutcome::kFailed, pd.status(), {}};
    StartPostcopyReceivers(&(*pd)->memory());
    PostcopySourceResult r;
    std::thread source([&] {
      PostcopyPageServer server(*requests_.src, src_->host(), kPages, [&] { control_.src->Close(); });
      r = RunPostcopySource(outstanding, {streams_.get(), requests_.src.get(), control_.src.get(), &server, may_hand_off},
                            2000);
    });
    *done = (*pd)->Finish(*control_.dst, nullptr);
    if (done->ok() && answer) answer();
    source.join();
    return r;
  }

  uint64_t DifferentPages() {
    uint64_t n = 0;
    for (uint64_t p = 0; p < kPages; ++p) n += std::memcmp(src_->host() + p * kPageBytes, dst_->host() + p * kPageBytes, kPageBytes) != 0;
    return n;
  }

  RateLimiter limiter_{0};
  std::unique_ptr<GuestMemory> src_, dst_;
  std::unique_ptr<Listener> listener_;
  std::vector<std::unique_ptr<Channel>> data_dst_;
  Pair requests_, control_;
  std::unique_ptr<StreamSet> streams_;
  std::vector<std::thread> receivers_;
  std::atomic<int> receive_end_ok_{0};
};

TEST_F(PostcopySwitchover, TouchedPagesAreFetchedOnDemandTheRestStreamsAndCompletionNeedsBothSides) {
  Bitmap outstanding = PrecopyThenChange();
  // Slow background (8 MB/s): the toucher's pages are fetched on demand long before it ends.
  RateLimiter slow(8 << 20);
  streams_->SetLimiter(&slow);
  PostcopyDestinationOptions o;
  o.io_timeout_ms = 5000;
  auto pd = PostcopyDestination::Switch(*dst_, outstanding, *requests_.dst, o);
  ASSERT_TRUE(pd.ok()) << pd.status().message();
  StartPostcopyReceivers(&(*pd)->memory());
  // The "vCPU": reads outstanding pages and a hole, before and while the background runs.
  std::atomic<uint64_t> wrong{0}, touched{0};
  std::thread vcpu([&] {
    uint64_t hole = kPages * 3 / 4;
    while (outstanding.Test(hole)) ++hole;
    wrong += std::memcmp(dst_->host() + hole * kPageBytes, src_->host() + hole * kPageBytes, kPageBytes) != 0;
    std::mt19937_64 rng(11);
    for (int i = 0; i < 200; ++i) {
      uint64_t p = rng() % kPages;
      if (i % 2 == 0) {  // half of them certainly outstanding
        while (!outstanding.Test(p)) p = (p + 1) % kPages;
      }
      wrong += std::memcmp(dst_->host() + p * kPageBytes, src_->host() + p * kPageBytes, kPageBytes) != 0;
      ++touched;
    }
  });
  PostcopySourceResult r;
  std::thread source([&] {
    PostcopyPageServer server(*requests_.src, src_->host(), kPages, [&] { control_.src->Close(); });
    r = RunPostcopySource(outstanding, {streams_.get(), requests_.src.get(), control_.src.get(), &server, {}}, 5000);
  });
  auto done = (*pd)->Finish(*control_.dst, [](PostcopyComplete* c) { c->held_frames = 3; });
  if (done.ok()) {
    EXPECT_TRUE(control_.dst->Send(MsgType::kPostcopyReleased, EncodeReason("")).ok());
  }
  source.join();
  vcpu.join();
  ASSERT_TRUE(done.ok()) << done.status().message();
  ASSERT_EQ(r.outcome, PostcopyOutcome::kCompleted) << r.why.message();
  EXPECT_EQ(wrong.load(), 0u) << "a touched page was not the source's";
  EXPECT_EQ(DifferentPages(), 0u);
  EXPECT_GT(done->faults, 0u);
  EXPECT_GT(done->fetched_pages, 0u);
  EXPECT_GT(done->placed_pages, 0u);
  EXPECT_EQ(done->fetched_pages + done->placed_pages, outstanding.Count());
  EXPECT_EQ(r.stats.destination.faults, done->faults) << "the source reports what the destination saw";
  EXPECT_EQ(r.stats.destination.held_frames, 3u);
  // A page of a fetched window may have been placed by the background first: it counts there.
  EXPECT_GE(r.stats.served.pages, done->fetched_pages);
  EXPECT_GE(r.stats.served.requests, done->faults);
  EXPECT_EQ(r.stats.outstanding_pages, outstanding.Count());
  EXPECT_GE((*pd)->memory().stats().zero_filled, 1u) << "a hole the source never wrote is zero-filled here without a round trip";
  for (auto& t : receivers_) t.join();
  receivers_.clear();
  EXPECT_EQ(receive_end_ok_.load(), static_cast<int>(kStreams)) << "every data stream ended cleanly";
}

TEST_F(PostcopySwitchover, ASourceThatDiesMidwayFailsTheDestinationWhichNeverCompletes) {
  Bitmap outstanding = PrecopyThenChange();
  RateLimiter slow(2 << 20);  // the background would take over a second
  streams_->SetLimiter(&slow);
  PostcopyDestinationOptions o;
  o.io_timeout_ms = 5000;
  auto pd = PostcopyDestination::Switch(*dst_, outstanding, *requests_.dst, o);
  ASSERT_TRUE(pd.ok()) << pd.status().message();
  StartPostcopyReceivers(&(*pd)->memory());
  std::thread source([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // The source host dies: every connection drops.
    streams_->CloseAll();
    requests_.src->Close();
    control_.src->Close();
  });
  std::atomic<bool> toucher_done{false};
  std::thread vcpu([&] {
    uint64_t p = 0;
    while (!outstanding.Test(p)) ++p;
    volatile uint8_t b = dst_->host()[p * kPageBytes];  // may block for good if the source is gone
    (void)b;
    toucher_done = true;
  });
  auto done = (*pd)->Finish(*control_.dst, nullptr);
  source.join();
  EXPECT_FALSE(done.ok());
  EXPECT_NE(done.status().code(), ErrorCode::kIndeterminate) << done.status().message();
  EXPECT_GT((*pd)->memory().missing(), 0u);
  pd->reset();  // unregisters: a toucher still blocked wakes (the VM would be stopped first)
  vcpu.join();
}

TEST_F(PostcopySwitchover, ADestinationThatDiesMidwayLeavesTheSourceFreeToResume) {
  Bitmap outstanding = PrecopyThenChange();
  RateLimiter slow(2 << 20);
  streams_->SetLimiter(&slow);
  PostcopySourceResult r;
  std::thread source([&] {
    PostcopyPageServer server(*requests_.src, src_->host(), kPages, [&] { control_.src->Close(); });
    r = RunPostcopySource(outstanding, {streams_.get(), requests_.src.get(), control_.src.get(), &server, {}}, 3000);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (auto& ch : data_dst_) ch->Close();  // the destination host dies
  requests_.dst->Close();
  control_.dst->Close();
  source.join();
  EXPECT_EQ(r.outcome, PostcopyOutcome::kFailed) << r.why.message();
  EXPECT_FALSE(r.why.ok());
}

TEST_F(PostcopySwitchover, CompletionWithoutTheSourcesEndIsIndeterminateNotARelease) {
  Bitmap outstanding = PrecopyThenChange();
  PostcopyDestinationOptions o;
  o.io_timeout_ms = 1000;
  auto pd = PostcopyDestination::Switch(*dst_, outstanding, *requests_.dst, o);
  ASSERT_TRUE(pd.ok()) << pd.status().message();
  StartPostcopyReceivers(&(*pd)->memory());
  // A source that sends every page, reads the completion, then dies before its end.
  std::thread source([&] {
    std::atomic<bool> stop{false};
    std::thread server([&] { (void)ServePageRequests(*requests_.src, src_->host(), kPages, stop); });
    streams_->BeginPostcopy(outstanding);
    EXPECT_TRUE(streams_->SendRound(outstanding).ok());
    EXPECT_TRUE(streams_->Finish().ok());
    Frame f;
    EXPECT_TRUE(control_.src->Expect(MsgType::kPostcopyComplete, &f).ok());
    control_.src->Close();
    server.join();
  });
  auto done = (*pd)->Finish(*control_.dst, nullptr);
  source.join();
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.status().code(), ErrorCode::kIndeterminate) << done.status().message();
  EXPECT_EQ(DifferentPages(), 0u) << "every page did arrive";
}

// Both ends to the destination's completion, the real source on a thread: `answer` is what
// the destination then does on the control stream (when it completed), `may_hand_off` the
// source's check before its end. Returns the source's result; `done`, the destination's.
TEST_F(PostcopySwitchover, ASourceWhoseEndIsNotConfirmedDoesNotClaimSuccess) {
  Result<PostcopyComplete> done = Status(ErrorCode::kAborted, "not run");
  // The destination host dies as it releases: the source cannot tell.
  PostcopySourceResult r = Complete([&] { control_.dst->Close(); }, {}, &done);
  ASSERT_TRUE(done.ok()) << done.status().message();
  EXPECT_EQ(r.outcome, PostcopyOutcome::kIndeterminate) << r.why.message();
  EXPECT_EQ(r.why.code(), ErrorCode::kIndeterminate);
  EXPECT_NE(r.why.message().find("did not confirm"), std::string::npos) << r.why.message();
}

TEST_F(PostcopySwitchover, ADestinationThatHoldsTheVmIsNoSuccessEither) {
  Result<PostcopyComplete> done = Status(ErrorCode::kAborted, "not run");
  PostcopySourceResult r = Complete(
      [&] { EXPECT_TRUE(control_.dst->Send(MsgType::kPostcopyReleased, EncodeReason("held: the disk image refused the writes")).ok()); },
      {}, &done);
  ASSERT_TRUE(done.ok()) << done.status().message();
  EXPECT_EQ(r.outcome, PostcopyOutcome::kIndeterminate) << r.why.message();
  EXPECT_NE(r.why.message().find("the disk image refused"), std::string::npos) << r.why.message();
}

// A source fenced while post-copy ran (its lease ran out) must not let the destination run
// the VM: it fails the post-copy, and the destination, told so, discards rather than waiting
// in commit-unknown.
TEST_F(PostcopySwitchover, AFencedSourceNeverSendsItsEndAndTheDestinationDiscards) {
  Result<PostcopyComplete> done = Status(ErrorCode::kAborted, "not run");
  std::atomic<int> asked{0};
  PostcopySourceResult r = Complete({}, [&] {
    ++asked;
    return false;
  }, &done);
  EXPECT_EQ(asked.load(), 1);
  EXPECT_EQ(r.outcome, PostcopyOutcome::kFailed) << r.why.message();
  EXPECT_NE(r.why.message().find("fenced"), std::string::npos) << r.why.message();
  ASSERT_FALSE(done.ok());
  EXPECT_NE(done.status().code(), ErrorCode::kIndeterminate)
      << "the source said it gives up: the destination must discard, not wait for an operator: " << done.status().message();
  EXPECT_NE(done.status().message().find("fenced"), std::string::npos) << done.status().message();
}

}  // namespace
}  // namespace ferry::migrate
