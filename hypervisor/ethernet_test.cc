#include "ethernet.h"

#include <gtest/gtest.h>

namespace ferry::hypervisor {
namespace {

const Mac kMac = {0x02, 0xfe, 1, 2, 3, 4};
constexpr uint32_t kIp = (127u << 24) | (31u << 16) | 100;  // 127.31.0.100

TEST(Ethernet, GratuitousArpAnnouncesMacAndIp) {
  auto f = GratuitousArp(kMac, kIp);
  ASSERT_EQ(f.size(), 60u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f[i], 0xff);
  EXPECT_EQ(SourceMac(f), kMac);
  EXPECT_EQ(f[12], 0x08);
  EXPECT_EQ(f[13], 0x06);
  EXPECT_EQ(f[21], 1);  // request
  EXPECT_EQ(f[28], 127);
  EXPECT_EQ(f[31], 100);
  EXPECT_EQ(f[38], 127);  // target IP == sender IP
  EXPECT_EQ(f[41], 100);
  EXPECT_EQ(SenderIpv4(f, kMac), kIp) << "the device learns what it announces";
}

TEST(Ethernet, LearnsTheSourceOfIpv4FramesFromItsOwnMacOnly) {
  std::vector<uint8_t> f(14 + 20, 0);
  std::copy(kMac.begin(), kMac.end(), f.begin() + 6);
  f[12] = 0x08;
  f[14] = 0x45;
  f[26] = 127, f[27] = 31, f[28] = 0, f[29] = 101;
  EXPECT_EQ(SenderIpv4(f, kMac), (127u << 24) | (31u << 16) | 101);
  Mac other = kMac;
  other[5] ^= 1;
  EXPECT_EQ(SenderIpv4(f, other), std::nullopt);
  f.resize(30);
  EXPECT_EQ(SenderIpv4(f, kMac), std::nullopt) << "truncated header";
  EXPECT_EQ(SenderIpv4(std::vector<uint8_t>(5), kMac), std::nullopt);
}

}  // namespace
}  // namespace ferry::hypervisor
