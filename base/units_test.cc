#include "ferry/base/units.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(UnitsTest, ParsesSuffixes) {
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("256M").value(), 256ull << 20);
  EXPECT_EQ(ParseSize("1G").value(), 1ull << 30);
  EXPECT_EQ(ParseSize("2gib").value(), 2ull << 30);
  EXPECT_EQ(ParseSize("64k").value(), 64ull << 10);
}

TEST(UnitsTest, ParseU64TakesOnlyWholeNumbers) {
  uint64_t v = 7;
  EXPECT_TRUE(ParseU64("0", &v));
  EXPECT_EQ(v, 0u);
  EXPECT_TRUE(ParseU64("18446744073709551615", &v));
  EXPECT_EQ(v, UINT64_MAX);
  for (const char* bad : {"", "x", "-1", "+1", " 1", "1 ", "1x", "18446744073709551616", "1e3", "nan"}) {
    v = 7;
    EXPECT_FALSE(ParseU64(bad, &v)) << bad;
    EXPECT_EQ(v, 7u) << bad;
  }
}

TEST(UnitsTest, RefusesJunkAndOverflow) {
  for (const char* bad : {"", "M", "12Q", "-1G", "1.5G", "99999999999999999999", "20000000000T"}) {
    auto r = ParseSize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(UnitsTest, Formats) {
  EXPECT_EQ(FormatSize(256ull << 20), "256 MiB");
  EXPECT_EQ(FormatSize(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(FormatSize(10), "10 B");
}

}  // namespace
}  // namespace ferry
