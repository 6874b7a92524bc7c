#include "ferry/replication/epoch_controller.h"

#include <gtest/gtest.h>

namespace ferry::replication {
namespace {

TEST(EpochControllerTest, FastShippingKeepsTheConfiguredInterval) {
  EpochController c(EpochOptions{});
  for (int i = 0; i < 10; ++i) {
    auto p = c.Next({1, 5});
    EXPECT_EQ(p.interval_ms, 25);
    EXPECT_EQ(p.throttle, 0u);
    EXPECT_FALSE(p.lagging);
  }
}

TEST(EpochControllerTest, SlowShippingStretchesTheIntervalThenShrinksBack) {
  EpochController c(EpochOptions{});
  auto p = c.Next({1, 80});
  EXPECT_TRUE(p.lagging);
  EXPECT_DOUBLE_EQ(p.interval_ms, 100);  // 80 ms of shipping plus a quarter
  p = c.Next({1, 90});
  EXPECT_FALSE(p.lagging) << "the stretched interval now fits";
  EXPECT_DOUBLE_EQ(p.interval_ms, 100);
  double last = p.interval_ms;
  for (int i = 0; i < 20; ++i) {
    p = c.Next({1, 4});
    EXPECT_LE(p.interval_ms, last);
    last = p.interval_ms;
  }
  EXPECT_DOUBLE_EQ(p.interval_ms, 25) << "back to the target once shipping is fast";
}

TEST(EpochControllerTest, AtTheMaximumIntervalItThrottlesAndReleasesTheThrottleFirst) {
  EpochOptions o;
  o.max_interval_ms = 200;
  EpochController c(o);
  auto p = c.Next({1, 500});
  EXPECT_DOUBLE_EQ(p.interval_ms, 200);
  EXPECT_EQ(p.throttle, 0u);
  p = c.Next({1, 500});
  EXPECT_EQ(p.throttle, 10u);
  for (int i = 0; i < 20; ++i) p = c.Next({1, 500});
  EXPECT_EQ(p.throttle, 80u) << "capped";
  p = c.Next({1, 20});
  EXPECT_EQ(p.throttle, 70u);
  EXPECT_DOUBLE_EQ(p.interval_ms, 200) << "the throttle comes off before the interval shrinks";
  for (int i = 0; i < 7; ++i) p = c.Next({1, 20});
  EXPECT_EQ(p.throttle, 0u);
  p = c.Next({1, 20});
  EXPECT_LT(p.interval_ms, 200);
}

TEST(EpochControllerTest, NeverThrottlesWhenNotAllowed) {
  EpochOptions o;
  o.max_interval_ms = 100;
  o.throttle = false;
  EpochController c(o);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(c.Next({1, 1000}).throttle, 0u);
  EXPECT_DOUBLE_EQ(c.interval_ms(), 100);
}

}  // namespace
}  // namespace ferry::replication
