#include "ferry/base/bitmap.h"

#include <gtest/gtest.h>

#include <thread>

namespace ferry {
namespace {

TEST(BitmapTest, SetTestClearCount) {
  Bitmap b(130);
  EXPECT_FALSE(b.Any());
  b.Set(0);
  b.Set(64);
  b.Set(129);
  EXPECT_TRUE(b.Test(64));
  EXPECT_FALSE(b.Test(65));
  EXPECT_EQ(b.Count(), 3u);
  b.Clear(64);
  EXPECT_EQ(b.Count(), 2u);
  b.ClearAll();
  EXPECT_FALSE(b.Any());
}

TEST(BitmapTest, SetRangeCrossesWordsAndClampsAtTheEnd) {
  Bitmap b(200);
  b.SetRange(60, 70);  // 60..129
  EXPECT_FALSE(b.Test(59));
  EXPECT_TRUE(b.Test(60));
  EXPECT_TRUE(b.Test(129));
  EXPECT_FALSE(b.Test(130));
  EXPECT_EQ(b.Count(), 70u);
  b.SetRange(190, 1000);
  EXPECT_EQ(b.Count(), 80u);
  b.SetAll();
  EXPECT_EQ(b.Count(), 200u);
}

TEST(BitmapTest, MergeIsUnion) {
  Bitmap a(100), b(100);
  a.Set(1);
  b.Set(1);
  b.Set(99);
  a.MergeFrom(b);
  EXPECT_EQ(a.Count(), 2u);
  EXPECT_TRUE(a.Test(99));
}

TEST(BitmapTest, TakeAtomicLosesNoConcurrentSet) {
  Bitmap shared(1 << 16), taken(1 << 16);
  std::thread writer([&] {
    for (uint64_t i = 0; i < shared.size(); ++i) shared.SetAtomic(i);
  });
  for (int round = 0; round < 1000; ++round) shared.TakeAtomic(&taken);
  writer.join();
  shared.TakeAtomic(&taken);
  EXPECT_EQ(taken.Count(), shared.size()) << "every set bit ends up taken exactly";
  EXPECT_FALSE(shared.Any());
}

}  // namespace
}  // namespace ferry
