// Checksums are part of Ferry's formats (wire frames, snapshot chunks): whichever vector unit
// computes them, the digests are XXH3-64's, the portable ones.
#include "ferry/base/checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <vector>

namespace ferry {
namespace {

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n + 1);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (auto& b : v) b = static_cast<uint8_t>((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 56);
  return v;
}

TEST(ChecksumTest, KnownAnswers) {
  EXPECT_EQ(Checksum64("", 0), 0x2D06800538D394C2ull);  // XXH3-64 of nothing (xxHash's test vectors)
  EXPECT_EQ(Checksum64Seeded("", 0, 0), 0x2D06800538D394C2ull);
}

TEST(ChecksumTest, EveryLengthAndAlignmentMatchesThePortableDigest) {
  const auto data = Pattern(70000);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (size_t n : {1023, 1024, 1025, 4095, 4096, 4097, 65535, 65536, 65537, 69999}) lengths.push_back(n);
  for (size_t n : lengths) {
    for (size_t off : {0, 1}) {  // an odd address as well: the vector paths load unaligned
      const uint8_t* p = data.data() + off;
      ASSERT_EQ(Checksum64(p, n), XXH3_64bits(p, n)) << n << " bytes at +" << off;
      ASSERT_EQ(Checksum64Seeded(p, n, 0xfe77), XXH3_64bits_withSeed(p, n, 0xfe77)) << n;
    }
  }
}

TEST(ChecksumTest, StreamingInPiecesEqualsOneShot) {
  const auto data = Pattern(70000);
  for (size_t piece : {1, 7, 64, 4096, 10000}) {
    Checksummer c;
    for (size_t at = 0; at < 70000; at += piece) c.Update(data.data() + at, std::min<size_t>(piece, 70000 - at));
    EXPECT_EQ(c.Digest(), XXH3_64bits(data.data(), 70000)) << "pieces of " << piece;
  }
}

}  // namespace
}  // namespace ferry
