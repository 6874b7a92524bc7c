#include "ferry/base/coding.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(CodingTest, RoundTripsEveryWidthLittleEndian) {
  Encoder e;
  e.PutU8(0xab);
  e.PutU16(0x1234);
  e.PutU32(0xdeadbeef);
  e.PutU64(0x0102030405060708ull);
  e.PutString("ferry");
  ASSERT_EQ(e.bytes()[1], 0x34);  // little-endian, byte by byte
  ASSERT_EQ(e.bytes()[2], 0x12);
  Decoder d(e.bytes());
  uint8_t a;
  uint16_t b;
  uint32_t c;
  uint64_t x;
  std::string s;
  ASSERT_TRUE(d.GetU8(&a) && d.GetU16(&b) && d.GetU32(&c) && d.GetU64(&x) && d.GetString(&s));
  EXPECT_EQ(a, 0xab);
  EXPECT_EQ(b, 0x1234);
  EXPECT_EQ(c, 0xdeadbeefu);
  EXPECT_EQ(x, 0x0102030405060708ull);
  EXPECT_EQ(s, "ferry");
  EXPECT_EQ(d.remaining(), 0u);
}

TEST(CodingTest, TruncatedInputFailsAndStaysFailed) {
  Encoder e;
  e.PutU64(42);
  for (size_t cut = 0; cut < 8; ++cut) {
    Decoder d(std::span<const uint8_t>(e.bytes().data(), cut));
    uint64_t v;
    EXPECT_FALSE(d.GetU64(&v));
    uint8_t b;
    EXPECT_FALSE(d.GetU8(&b)) << "a failed decoder must not resume";
    EXPECT_FALSE(d.ok());
  }
}

TEST(CodingTest, StringLengthIsBoundedBeforeAllocation) {
  Encoder e;
  e.PutU32(0xffffffff);  // claims 4 GiB
  Decoder d(e.bytes());
  std::string s;
  EXPECT_FALSE(d.GetString(&s, 1024));
}

TEST(CodingTest, PatchOverwritesInPlace) {
  Encoder e;
  e.PutU32(0);
  e.PutU64(0);
  e.PatchU32(0, 7);
  e.PatchU64(4, 9);
  Decoder d(e.bytes());
  uint32_t a;
  uint64_t b;
  ASSERT_TRUE(d.GetU32(&a) && d.GetU64(&b));
  EXPECT_EQ(a, 7u);
  EXPECT_EQ(b, 9u);
}

}  // namespace
}  // namespace ferry
