#include "ferry/base/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace ferry {
namespace {

// A burst, then per_second; each line that is logged says how many were dropped before it.
TEST(LogLimiter, ABurstThenAFewASecondEachSayingHowManyWereDropped) {
  LogLimiter limiter(10, 3);
  uint64_t dropped = 99;
  int logged = 0;
  for (int k = 0; k < 1000; ++k) logged += limiter.Allow(1000, &dropped);  // one instant
  EXPECT_EQ(logged, 3);
  EXPECT_EQ(dropped, 0u);
  EXPECT_FALSE(limiter.Allow(1050, &dropped)) << "half a token after 50 ms";
  ASSERT_TRUE(limiter.Allow(1100, &dropped));
  EXPECT_EQ(dropped, 998u) << "the 997 of the burst and the one at 1050 ms";
  logged = 0;
  for (uint64_t ms = 1101; ms <= 11100; ++ms) logged += limiter.Allow(ms, &dropped);  // every ms for 10 s
  EXPECT_GE(logged, 99);
  EXPECT_LE(logged, 101);
  EXPECT_FALSE(limiter.Allow(11100, &dropped));
  ASSERT_TRUE(limiter.Allow(1000000, &dropped)) << "refilled after a quiet while";
  EXPECT_TRUE(limiter.Allow(1000000, &dropped));
  EXPECT_TRUE(limiter.Allow(1000000, &dropped));
  EXPECT_FALSE(limiter.Allow(1000000, &dropped)) << "no more than the burst, however long the quiet";
}

// From several threads at once (every device queue's thread shares one limiter): every call
// is either logged or counted, once, in the next logged line's dropped count.
TEST(LogLimiter, FromManyThreadsEveryCallIsLoggedOrCountedOnce) {
  LogLimiter limiter(100, 5);
  constexpr int kThreads = 4, kCalls = 20000;
  std::atomic<uint64_t> clock_ms{1000}, logged{0}, reported{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < kCalls; ++k) {
        uint64_t dropped = 0;
        const uint64_t now = k % 50 == 0 ? ++clock_ms : clock_ms.load();
        if (limiter.Allow(now, &dropped)) {
          ++logged;
          reported += dropped;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  uint64_t rest = 0;
  ASSERT_TRUE(limiter.Allow(clock_ms + 100000, &rest));
  EXPECT_EQ(logged + reported + rest, uint64_t{kThreads} * kCalls);
  EXPECT_GT(logged.load(), 5u);
  EXPECT_LT(logged.load(), uint64_t{kThreads} * kCalls / 10);
}

}  // namespace
}  // namespace ferry
