#include "ferry/migrate/checkpoint_protocol.h"

#include <gtest/gtest.h>

#include "ferry/base/coding.h"
#include "fuzz_seed.h"

namespace ferry::migrate {
namespace {

TEST(CheckpointProtocolTest, CheckpointRoundTripsAndChecksStreamsAndEpoch) {
  CheckpointMsg m;
  m.epoch = 7;
  m.stream_frames = {12, 40};
  m.disk_frames = 3;
  m.vm_state = {1, 2, 3, 4, 5};
  auto p = EncodeCheckpoint(m);
  MaybeWriteSeed("checkpoint", MsgType::kCheckpoint, 1, p);  // aux 1: two streams
  auto r = DecodeCheckpoint(p, 2);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->epoch, 7u);
  EXPECT_EQ(r->stream_frames, m.stream_frames);
  EXPECT_EQ(r->disk_frames, 3u);
  EXPECT_EQ(r->vm_state, m.vm_state);
  EXPECT_FALSE(DecodeCheckpoint(p, 3).ok()) << "wrong stream count";
  p.pop_back();
  EXPECT_FALSE(DecodeCheckpoint(p, 2).ok()) << "truncated";
  m.epoch = 0;
  EXPECT_FALSE(DecodeCheckpoint(EncodeCheckpoint(m), 2).ok()) << "epochs start at 1";
}

TEST(CheckpointProtocolTest, EpochAndEpochEndRoundTrip) {
  MaybeWriteSeed("checkpoint-ack", MsgType::kCheckpointAck, 0, EncodeEpoch(99));
  MaybeWriteSeed("epoch-end", MsgType::kEpochEnd, 0, EncodeEpochEnd(EpochEnd{5, 300, 17}));
  auto ep = DecodeEpoch(EncodeEpoch(99));
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(*ep, 99u);
  auto e = EncodeEpoch(1);
  e.push_back(0);
  EXPECT_FALSE(DecodeEpoch(e).ok());
  auto end = DecodeEpochEnd(EncodeEpochEnd(EpochEnd{5, 300, 17}));
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->epoch, 5u);
  EXPECT_EQ(end->pages, 300u);
  EXPECT_EQ(end->frames, 17u);
  EXPECT_FALSE(DecodeEpochEnd(std::vector<uint8_t>(23)).ok());
}

TEST(CheckpointProtocolTest, DiskWritesRoundTripWithZeroRecords) {
  DiskWritesBuilder b;
  std::vector<uint8_t> data(1024, 0xab);
  ASSERT_TRUE(b.Fits(1024));
  b.Add(512, data);
  b.AddZero(1 << 20, 4096);
  auto payload = b.Finish();
  MaybeWriteSeed("disk-writes", MsgType::kDiskWrites, 1, payload);  // aux 1: a 2 MiB disk
  std::vector<DiskRecord> seen;
  std::vector<std::vector<uint8_t>> bytes;
  ASSERT_TRUE(DecodeDiskWrites(payload, 2 << 20, [&](const DiskRecord& r) {
                seen.push_back(r);
                bytes.emplace_back(r.data.begin(), r.data.end());
                return Status::Ok();
              }).ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].offset, 512u);
  EXPECT_FALSE(seen[0].zero);
  EXPECT_EQ(bytes[0], data);
  EXPECT_TRUE(seen[1].zero);
  EXPECT_EQ(seen[1].length, 4096u);
  EXPECT_TRUE(bytes[1].empty());
}

TEST(CheckpointProtocolTest, DiskWritesRefuseMisalignedOversizedAndOutOfRangeRecords) {
  auto one = [](uint64_t offset, uint32_t length, uint8_t flags, size_t data) {
    Encoder e;
    e.PutU32(1);
    e.PutU64(offset);
    e.PutU32(length);
    e.PutU8(flags);
    e.PutBytes(std::vector<uint8_t>(data, 0));
    return e.Take();
  };
  auto ok = [](const DiskRecord&) { return Status::Ok(); };
  const uint64_t disk = 1 << 20;
  EXPECT_TRUE(DecodeDiskWrites(one(0, 512, 0, 512), disk, ok).ok());
  EXPECT_FALSE(DecodeDiskWrites(one(1, 512, 0, 512), disk, ok).ok()) << "offset not a sector";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 100, 0, 100), disk, ok).ok()) << "length not sectors";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 0, 0, 0), disk, ok).ok()) << "empty";
  EXPECT_FALSE(DecodeDiskWrites(one(disk - 512, 1024, 0, 1024), disk, ok).ok()) << "past the end";
  EXPECT_FALSE(DecodeDiskWrites(one(UINT64_MAX - 511, 512, 0, 512), disk, ok).ok()) << "wrapping offset";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 512, 0, 511), disk, ok).ok()) << "truncated data";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 512, 0, 513), disk, ok).ok()) << "bytes left over";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 512, 2, 512), disk, ok).ok()) << "unknown flag";
  EXPECT_FALSE(DecodeDiskWrites(one(0, 512, 1, 512), disk, ok).ok()) << "zero record with data";
  EXPECT_FALSE(DecodeDiskWrites(std::vector<uint8_t>{0, 0, 0, 0}, disk, ok).ok()) << "no records";
}

TEST(CheckpointProtocolTest, BuilderStopsAtItsLimits) {
  DiskWritesBuilder b;
  std::vector<uint8_t> mib(1 << 20, 1);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(b.Fits(mib.size()));
    b.Add(uint64_t(i) << 20, mib);
  }
  EXPECT_FALSE(b.Fits(512)) << "4 MiB of data is a full frame";
  EXPECT_LE(b.Finish().size(), kMaxDiskWritesPayload);
  b.Start();
  EXPECT_EQ(b.count(), 0u);
  EXPECT_TRUE(b.Fits(512));
}

}  // namespace
}  // namespace ferry::migrate
