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
