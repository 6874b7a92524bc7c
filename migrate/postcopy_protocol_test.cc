// The post-copy messages: round trips, and the decoder refusing what a hostile or broken
// peer could send (a bitmap for another VM size, bits beyond the VM, truncation, flags).
#include "ferry/migrate/postcopy_protocol.h"

#include <gtest/gtest.h>

#include "fuzz_seed.h"

namespace ferry::migrate {
namespace {

PostcopyStateMsg Sample(uint64_t pages) {
  PostcopyStateMsg m;
  m.stream_frames = {7, 9};
  m.outstanding = Bitmap(pages);
  m.outstanding.Set(0);
  m.outstanding.Set(pages - 1);
  m.vm_state = {1, 2, 3, 4};
  return m;
}

TEST(PostcopyProtocol, StateRoundTrips) {
  // aux 17: two streams and 17*8+1 pages in tests/fuzz/migrate_decode_fuzz.cc
  MaybeWriteSeed("postcopy-state", MsgType::kPostcopyState, 17, EncodePostcopyState(Sample(137)));
  MaybeWriteSeed("postcopy-complete", MsgType::kPostcopyComplete, 0, EncodePostcopyComplete(PostcopyComplete{3, 40, 900, 12, 80, 400, 2, 8192}));
  auto bytes = EncodePostcopyState(Sample(1000));
  auto m = DecodePostcopyState(bytes, 2, 1000);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->stream_frames, (std::vector<uint64_t>{7, 9}));
  EXPECT_EQ(m->outstanding.Count(), 2u);
  EXPECT_TRUE(m->outstanding.Test(999));
  EXPECT_EQ(m->vm_state, (std::vector<uint8_t>{1, 2, 3, 4}));
  EXPECT_LE(bytes.size(), MaxPayload(static_cast<uint16_t>(MsgType::kPostcopyState)));
}

TEST(PostcopyProtocol, StateForAnotherVmOrWithStrayBitsOrTruncatedIsRefused) {
  auto bytes = EncodePostcopyState(Sample(1000));
  EXPECT_FALSE(DecodePostcopyState(bytes, 2, 1024).ok()) << "the bitmap must describe the announced VM";
  EXPECT_FALSE(DecodePostcopyState(bytes, 3, 1000).ok()) << "stream count";
  for (size_t cut : {size_t{0}, size_t{3}, size_t{30}, bytes.size() - 1}) {
    EXPECT_FALSE(DecodePostcopyState(std::span(bytes).first(cut), 2, 1000).ok()) << cut;
  }
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(DecodePostcopyState(longer, 2, 1000).ok());
  // Bit 1000 lies beyond a 1000-page VM: last word is bytes [4 + 16 + 8 + 15 * 8, +8).
  auto stray = bytes;
  stray[4 + 16 + 8 + 15 * 8 + 5] |= 0x01;  // bit 1000 = word 15, bit 40
  auto r = DecodePostcopyState(stray, 2, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("beyond"), std::string::npos) << r.status().message();
}

TEST(PostcopyProtocol, CompleteRoundTripsAndHasAFixedSize) {
  PostcopyComplete c;
  c.faults = 3;
  c.fetched_pages = 24;
  c.placed_pages = 1000;
  c.fault_p50_us = 80;
  c.fault_p99_us = 900;
  c.fault_max_us = 2000;
  c.held_frames = 12;
  c.held_disk_bytes = 8192;
  auto bytes = EncodePostcopyComplete(c);
  EXPECT_EQ(bytes.size(), kPostcopyCompletePayload);
  auto d = DecodePostcopyComplete(bytes);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->fetched_pages, 24u);
  EXPECT_EQ(d->fault_p99_us, 900u);
  EXPECT_EQ(d->held_disk_bytes, 8192u);
  bytes.pop_back();
  EXPECT_FALSE(DecodePostcopyComplete(bytes).ok());
}

TEST(PostcopyProtocol, BeginCarriesThePostcopyFlagButNotWithReplication) {
  Begin b;
  b.config.mem_bytes = 64 << 20;
  b.config.vcpus = 1;
  b.streams = 2;
  b.postcopy = true;
  auto d = DecodeBegin(EncodeBegin(b));
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d->postcopy);
  b.replication = true;
  EXPECT_FALSE(DecodeBegin(EncodeBegin(b)).ok());
}

}  // namespace
}  // namespace ferry::migrate
