#include "ferry/dirtylog/page_ranges.h"

#include <gtest/gtest.h>

#include <random>

namespace ferry::dirtylog {
namespace {

using Ranges = std::vector<PageRange>;

TEST(PageRangesTest, EmptyAndFull) {
  EXPECT_TRUE(Coalesce(Bitmap(1000)).empty());
  Bitmap full(1000);
  full.SetAll();
  EXPECT_EQ(Coalesce(full), (Ranges{{0, 1000}}));
}

TEST(PageRangesTest, RunsAcrossWordBoundariesAreOne) {
  Bitmap b(256);
  b.SetRange(60, 10);    // 60..69 crosses the first word boundary
  b.SetRange(127, 66);   // 127..192 spans a whole word
  b.Set(255);
  EXPECT_EQ(Coalesce(b), (Ranges{{60, 10}, {127, 66}, {255, 1}}));
}

TEST(PageRangesTest, AlternatingBits) {
  Bitmap b(130);
  for (uint64_t i = 0; i < 130; i += 2) b.Set(i);
  auto r = Coalesce(b);
  ASSERT_EQ(r.size(), 65u);
  for (size_t i = 0; i < r.size(); ++i) EXPECT_EQ(r[i], (PageRange{i * 2, 1}));
}

TEST(PageRangesTest, MatchesANaiveScanOnRandomBitmaps) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; ++round) {
    uint64_t n = 1 + rng() % 700;
    Bitmap b(n);
    int density = rng() % 100;
    for (uint64_t i = 0; i < n; ++i) {
      if (static_cast<int>(rng() % 100) < density) b.Set(i);
    }
    Ranges naive;
    for (uint64_t i = 0; i < n;) {
      if (!b.Test(i)) {
        ++i;
        continue;
      }
      uint64_t j = i;
      while (j < n && b.Test(j)) ++j;
      naive.push_back({i, j - i});
      i = j;
    }
    ASSERT_EQ(Coalesce(b), naive) << "round " << round;
  }
}

}  // namespace
}  // namespace ferry::dirtylog
