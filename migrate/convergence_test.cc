// ConvergenceController over synthetic round samples: when it stops, continues, gives up,
// and how it throttles.
#include "ferry/migrate/convergence.h"

#include <gtest/gtest.h>

#include "ferry/migrate/protocol.h"

namespace ferry::migrate {
namespace {

constexpr uint64_t kSecond = 1000000000ull;

// A round that sent raw pages at 409.6 MB/s (100,000 pages a second by default).
RoundSample Round(uint32_t round, uint64_t dirty_pages, double fixed_ms = 0, uint64_t pages_sent = 100000) {
  RoundSample s;
  s.round = round;
  s.pages_sent = pages_sent;
  s.wire_bytes = s.pages_sent * kPageBytes;
  s.send_ns = pages_sent * (kSecond / 100000);
  s.dirty_pages = dirty_pages;
  s.dirty_window_ns = kSecond;
  s.elapsed_ns = (round + 1) * kSecond;
  s.fixed_ms = fixed_ms;
  return s;
}

constexpr double kBandwidth = 100000.0 * kPageBytes;  // bytes per second

TEST(ConvergenceTest, StopsWhenThePredictedDowntimeFitsTheTarget) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  // 1000 pages at 409.6 MB/s: 10 ms, plus 5 ms of fixed cost; the round that left them sent
  // only 1000 pages itself, so the dirty set no longer shrinks.
  Verdict v = c.Next(Round(0, 1000, 5, 1000));
  EXPECT_EQ(v.decision, Decision::kStopAndCopy) << v.reason;
  EXPECT_NEAR(v.predicted_downtime_ms, 15.0, 1e-6);
  EXPECT_NEAR(v.bandwidth_bytes_s, kBandwidth, 1e-3);
  EXPECT_NE(v.reason.find("fit"), std::string::npos) << v.reason;
}

TEST(ConvergenceTest, ContinuesWhenThePredictionExceedsTheTarget) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  Verdict v = c.Next(Round(0, 10000, 5));  // 100 ms + 5 ms
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  EXPECT_NEAR(v.predicted_downtime_ms, 105.0, 1e-6);
  EXPECT_NE(v.reason.find("> 50 ms"), std::string::npos) << v.reason;
  // Exactly at the target is good enough.
  ConvergenceController at(ConvergenceOptions{.downtime_ms = 50});
  EXPECT_EQ(at.Next(Round(0, 5000, 0, 5000)).decision, Decision::kStopAndCopy);
}

TEST(ConvergenceTest, RefinesWhileTheDirtySetStillHalvesThenStops) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  // Each round sends the previous round's dirty pages; all of them fit the target.
  Verdict v = c.Next(Round(0, 4000, 0, 100000));
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  EXPECT_NEAR(v.predicted_downtime_ms, 40.0, 1e-6);
  v = c.Next(Round(1, 1000, 0, 4000));
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  v = c.Next(Round(2, 400, 0, 1000));
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  v = c.Next(Round(3, 300, 0, 400));  // no longer halving: the guest's steady state
  EXPECT_EQ(v.decision, Decision::kStopAndCopy) << v.reason;
}

TEST(ConvergenceTest, RefiningIsBounded) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  int continued = 0;
  for (uint32_t r = 0; r < 20 && c.Next(Round(r, 1000, 0, 100000)).decision == Decision::kContinue; ++r) ++continued;
  EXPECT_EQ(continued, 8);
  // A handful of dirty pages is not worth another round, halving or not.
  ConvergenceController few(ConvergenceOptions{.downtime_ms = 50});
  EXPECT_EQ(few.Next(Round(0, 32, 0, 100000)).decision, Decision::kStopAndCopy);
}

TEST(ConvergenceTest, ARefiningRoundDoesNotClaimToMissTheTarget) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  Verdict v = c.Next(Round(0, 1000, 0, 100000));  // 10 ms predicted, still halving
  ASSERT_EQ(v.decision, Decision::kContinue);
  EXPECT_EQ(v.reason.find("> 50 ms target"), std::string::npos)
      << "the operator is told the target was missed: " << v.reason;
}

TEST(ConvergenceTest, FixedCostsAloneCanMissTheTarget) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50});
  EXPECT_EQ(c.Next(Round(0, 10, 60)).decision, Decision::kContinue);
  // With nothing left to send, going on cannot help: stop.
  EXPECT_EQ(c.Next(Round(1, 0, 60)).decision, Decision::kStopAndCopy);
}

TEST(ConvergenceTest, WithoutAMeasuredBandwidthItDoesNotStop) {
  ConvergenceController c(ConvergenceOptions{});
  RoundSample s = Round(0, 10);
  s.send_ns = 0;
  s.wire_bytes = 0;
  Verdict v = c.Next(s);
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  EXPECT_EQ(v.bandwidth_bytes_s, 0);
}

TEST(ConvergenceTest, AbortsAtTheDeadline) {
  ConvergenceOptions o{.downtime_ms = 50, .deadline_ms = 10000};
  RoundSample s = Round(3, 100000);
  s.elapsed_ns = 10000 * 1000000ull - 1;
  EXPECT_EQ(ConvergenceController(o).Next(s).decision, Decision::kContinue);
  s.elapsed_ns = 10000 * 1000000ull;
  Verdict v = ConvergenceController(o).Next(s);
  EXPECT_EQ(v.decision, Decision::kAbort);
  EXPECT_NE(v.reason.find("deadline"), std::string::npos) << v.reason;
  s.elapsed_ns = 50000 * 1000000ull;
  EXPECT_EQ(ConvergenceController(o).Next(s).decision, Decision::kAbort);
  // A round that converges at the deadline still stops and copies.
  s.dirty_pages = 10;
  EXPECT_EQ(ConvergenceController(o).Next(s).decision, Decision::kStopAndCopy);
}

TEST(ConvergenceTest, AFittingRoundAtTheDeadlineStopsEvenWhileStillHalving) {
  // 1000 dirty pages predict 10 ms, within the target; the set is still halving, which alone
  // would ask for another round, but the deadline leaves none: stop and copy, do not give up.
  ConvergenceOptions o{.downtime_ms = 50, .deadline_ms = 10000};
  RoundSample s = Round(3, 1000, 0, 100000);
  s.elapsed_ns = 10000 * 1000000ull;
  Verdict v = ConvergenceController(o).Next(s);
  EXPECT_EQ(v.decision, Decision::kStopAndCopy) << v.reason;
}

// Dirtying 60,000 pages a second is 245.8 MB/s of wire bytes: more than half of 409.6 MB/s.
constexpr uint64_t kOutrun = 60000;
// 40,000 pages a second is 163.8 MB/s: less than half.
constexpr uint64_t kKeepUp = 40000;
// 200,000 pages a second is twice the link.
constexpr uint64_t kFlood = 200000;

TEST(ConvergenceTest, NoThrottleWhileTheGuestKeepsUp) {
  ConvergenceController c(ConvergenceOptions{});
  for (uint32_t r = 0; r < 10; ++r) {
    Verdict v = c.Next(Round(r, kKeepUp));
    EXPECT_EQ(v.decision, Decision::kContinue);
    EXPECT_LE(v.dirty_bytes_s, 0.5 * v.bandwidth_bytes_s);
    EXPECT_EQ(v.throttle, 0u) << "round " << r;
  }
  EXPECT_EQ(c.max_throttle(), 0u);
}

TEST(ConvergenceTest, NeverThrottlesWithAutoConvergeOff) {
  ConvergenceController c(ConvergenceOptions{.auto_converge = false});
  for (uint32_t r = 0; r < 10; ++r) EXPECT_EQ(c.Next(Round(r, kFlood)).throttle, 0u);
  EXPECT_EQ(c.max_throttle(), 0u);
}

TEST(ConvergenceTest, ThrottlesAnOutrunningGuestAndStepsUpToTheMaximum) {
  ConvergenceController c(ConvergenceOptions{});
  Verdict v = c.Next(Round(0, kOutrun));
  EXPECT_GT(v.dirty_bytes_s, 0.5 * v.bandwidth_bytes_s);
  // Running at 80%, this guest dirties 5/6 of what it would: the initial 20% covers it.
  EXPECT_EQ(v.throttle, 20u);
  uint32_t prev = v.throttle;
  for (uint32_t r = 1; r < 20; ++r) {
    uint32_t t = c.Next(Round(r, kOutrun)).throttle;
    EXPECT_LE(t, 99u);
    if (prev < 99) {
      EXPECT_GE(t, std::min(99u, prev + 10)) << "round " << r << ": at least one step more while it outruns";
    }
    prev = t;
  }
  EXPECT_EQ(prev, 99u);
  EXPECT_EQ(c.max_throttle(), 99u);
}

TEST(ConvergenceTest, AGuestFarAheadIsThrottledToWhatTheRatesCallForAtOnce) {
  ConvergenceController c(ConvergenceOptions{});
  // Twice the link: at most a quarter of the CPU keeps it to half the link.
  Verdict v = c.Next(Round(0, kFlood));
  EXPECT_EQ(v.throttle, 75u);
}

TEST(ConvergenceTest, AThrottleStaysWhileTheGuestKeepsUp) {
  ConvergenceController c(ConvergenceOptions{});
  uint32_t t = c.Next(Round(0, kOutrun)).throttle;
  ASSERT_GT(t, 0u);
  // It is what lets the guest keep up: lifting it would undo the progress.
  for (uint32_t r = 1; r < 4; ++r) EXPECT_EQ(c.Next(Round(r, kKeepUp)).throttle, t);
}

TEST(ConvergenceTest, HonoursCustomThrottleLimits) {
  ConvergenceController c(ConvergenceOptions{.throttle_initial = 50, .throttle_step = 30, .throttle_max = 90});
  std::vector<uint32_t> seen;
  for (uint32_t r = 0; r < 4; ++r) seen.push_back(c.Next(Round(r, kOutrun)).throttle);
  EXPECT_EQ(seen, (std::vector<uint32_t>{50, 80, 90, 90}));
  ConvergenceController capped(ConvergenceOptions{.throttle_max = 60});
  EXPECT_EQ(capped.Next(Round(0, kFlood)).throttle, 60u);
}

TEST(ConvergenceTest, PredictedDowntimeScalesWithDirtyPages) {
  double prev = 0;
  for (uint64_t dirty : {1000, 2000, 4000, 8000}) {
    ConvergenceController c(ConvergenceOptions{});
    double ms = c.Next(Round(0, dirty)).predicted_downtime_ms;
    EXPECT_NEAR(ms, dirty * kPageBytes / kBandwidth * 1e3, 1e-6) << dirty << " pages";
    if (prev > 0) {
      EXPECT_NEAR(ms / prev, 2.0, 1e-9);
    }
    prev = ms;
  }
}

TEST(ConvergenceTest, UsesTheMeasuredWireBytesPerPage) {
  ConvergenceController c(ConvergenceOptions{});
  // Round 0 compressed well: 1000 wire bytes a page, 100 MB/s.
  RoundSample s0 = Round(0, 50000);
  s0.wire_bytes = s0.pages_sent * 1000;
  Verdict v0 = c.Next(s0);
  EXPECT_NEAR(v0.predicted_downtime_ms, 50000 * 1000 / 1e8 * 1e3, 1e-6);
  // Round 1 sent too few pages to judge; the overall ratio stands in.
  RoundSample s1 = Round(1, 50000);
  s1.pages_sent = 10;
  s1.wire_bytes = 10 * kPageBytes;
  s1.send_ns = 1000;
  Verdict v1 = c.Next(s1);
  double per_page = (100000.0 * 1000 + 10 * kPageBytes) / 100010;
  double bandwidth = (100000.0 * 1000 + 10 * kPageBytes) * 1e9 / (kSecond + 1000);
  EXPECT_NEAR(v1.bandwidth_bytes_s, bandwidth, 1e-3);
  EXPECT_NEAR(v1.predicted_downtime_ms, 50000 * per_page / bandwidth * 1e3, 1e-6);
}

}  // namespace
}  // namespace ferry::migrate

namespace ferry::migrate {
namespace {

TEST(ConvergenceTest, AutoModeSwitchesToPostcopyInsteadOfThrottlingAGuestFasterThanTheLink) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50, .postcopy = true});
  // 80,000 pages dirtied in a second at 100,000 pages a second of bandwidth: pre-copy would
  // throttle; auto mode switches, and never throttles.
  Verdict v = c.Next(Round(0, 80000));
  EXPECT_EQ(v.decision, Decision::kPostcopy) << v.reason;
  EXPECT_EQ(v.throttle, 0u);
  EXPECT_NE(v.reason.find("post-copy"), std::string::npos) << v.reason;
  EXPECT_EQ(c.max_throttle(), 0u);
}

TEST(ConvergenceTest, AutoModeLeavesAConvergingGuestInPrecopyUntilPostcopyAfter) {
  ConvergenceOptions o{.downtime_ms = 50, .deadline_ms = 600000, .postcopy = true, .postcopy_after_ms = 3000};
  ConvergenceController c(o);
  // 20,000 dirty pages a second: within half the link, but 200 ms to send: keep going...
  Verdict v = c.Next(Round(0, 20000));
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  v = c.Next(Round(1, 20000));
  EXPECT_EQ(v.decision, Decision::kContinue) << v.reason;
  // ...until --postcopy-after-s (round 2 ends at 3 s).
  v = c.Next(Round(2, 20000));
  EXPECT_EQ(v.decision, Decision::kPostcopy) << v.reason;
  EXPECT_NE(v.reason.find("postcopy-after"), std::string::npos) << v.reason;
  // A guest that fits the target still stops and copies in auto mode.
  ConvergenceController d(o);
  EXPECT_EQ(d.Next(Round(0, 1000, 5, 1000)).decision, Decision::kStopAndCopy);
}

TEST(ConvergenceTest, AutoModeSwitchesAtTheDeadlineInsteadOfGivingUp) {
  ConvergenceController c(ConvergenceOptions{.downtime_ms = 50, .deadline_ms = 2000, .postcopy = true});
  EXPECT_EQ(c.Next(Round(0, 20000)).decision, Decision::kContinue);
  EXPECT_EQ(c.Next(Round(1, 20000)).decision, Decision::kPostcopy);
}

}  // namespace
}  // namespace ferry::migrate
