#include "ferry/base/log.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ferry
