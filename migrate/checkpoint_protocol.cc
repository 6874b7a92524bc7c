#include "ferry/migrate/checkpoint_protocol.h"

#include "ferry/base/coding.h"

namespace ferry::migrate {
namespace {
constexpr uint32_t kSector = 512;
constexpr uint8_t kZeroFlag = 1;
Status Malformed(const char* what) { return Corrupt(std::string("malformed ") + what + " message"); }
}  // namespace

std::vector<uint8_t> EncodeCheckpoint(const CheckpointMsg& m) {
  Encoder e;
  e.PutU64(m.epoch);
  e.PutU32(static_cast<uint32_t>(m.stream_frames.size()));
  for (uint64_t f : m.stream_frames) e.PutU64(f);
  e.PutU32(m.disk_frames);
  e.PutU32(static_cast<uint32_t>(m.vm_state.size()));
  e.PutBytes(m.vm_state);
  return e.Take();
}

Result<CheckpointMsg> DecodeCheckpoint(std::span<const uint8_t> p, uint32_t streams) {
  Decoder d(p);
  CheckpointMsg m;
  uint32_t n = 0, len = 0;
  d.GetU64(&m.epoch);
  if (!d.GetU32(&n) || n != streams) return Corrupt("checkpoint message names the wrong number of streams");
  m.stream_frames.resize(n);
  for (auto& f : m.stream_frames) d.GetU64(&f);
  d.GetU32(&m.disk_frames);
  std::span<const uint8_t> vm;
  if (!d.GetU32(&len) || !d.GetBytes(len, &vm) || d.remaining() != 0) return Malformed("checkpoint");
  if (m.epoch == 0) return Corrupt("checkpoint for epoch 0");
  m.vm_state.assign(vm.begin(), vm.end());
  return m;
}

std::vector<uint8_t> EncodeEpoch(uint64_t epoch) {
  Encoder e;
  e.PutU64(epoch);
  return e.Take();
}

Result<uint64_t> DecodeEpoch(std::span<const uint8_t> p) {
  Decoder d(p);
  uint64_t epoch = 0;
  if (!d.GetU64(&epoch) || d.remaining() != 0) return Malformed("checkpoint-ack");
  return epoch;
}

std::vector<uint8_t> EncodeEpochEnd(const EpochEnd& m) {
  Encoder e;
  e.PutU64(m.epoch);
  e.PutU64(m.pages);
  e.PutU64(m.frames);
  return e.Take();
}

Result<EpochEnd> DecodeEpochEnd(std::span<const uint8_t> p) {
  Decoder d(p);
  EpochEnd m;
  d.GetU64(&m.epoch);
  d.GetU64(&m.pages);
  if (!d.GetU64(&m.frames) || d.remaining() != 0) return Malformed("epoch-end");
  return m;
}

void DiskWritesBuilder::Start() {
  buf_.assign(4, 0);
  count_ = 0;
  data_bytes_ = 0;
}

bool DiskWritesBuilder::Fits(uint32_t length) const {
  return count_ < kMaxDiskWriteRecords && data_bytes_ + length <= kMaxDiskWriteBytes;
}

void DiskWritesBuilder::Add(uint64_t offset, std::span<const uint8_t> data) {
  Encoder e;
  e.PutU64(offset);
  e.PutU32(static_cast<uint32_t>(data.size()));
  e.PutU8(0);
  buf_.insert(buf_.end(), e.bytes().begin(), e.bytes().end());
  buf_.insert(buf_.end(), data.begin(), data.end());
  ++count_;
  data_bytes_ += data.size();
}

void DiskWritesBuilder::AddZero(uint64_t offset, uint32_t length) {
  Encoder e;
  e.PutU64(offset);
  e.PutU32(length);
  e.PutU8(kZeroFlag);
  buf_.insert(buf_.end(), e.bytes().begin(), e.bytes().end());
  ++count_;
}

std::span<const uint8_t> DiskWritesBuilder::Finish() {
  StoreLe32(buf_.data(), count_);
  return buf_;
}

Status DecodeDiskWrites(std::span<const uint8_t> payload, uint64_t disk_bytes,
                        const std::function<Status(const DiskRecord&)>& fn) {
  Decoder d(payload);
  uint32_t count = 0;
  if (!d.GetU32(&count) || count == 0 || count > kMaxDiskWriteRecords) return Malformed("disk-writes");
  for (uint32_t i = 0; i < count; ++i) {
    DiskRecord r;
    uint8_t flags = 0;
    d.GetU64(&r.offset);
    d.GetU32(&r.length);
    if (!d.GetU8(&flags)) return Malformed("disk-writes");
    if (flags > kZeroFlag) return Corrupt("disk write with unknown flags");
    r.zero = flags == kZeroFlag;
    if (r.length == 0 || r.length % kSector != 0 || r.offset % kSector != 0 || r.length > kMaxDiskWriteBytes) {
      return Corrupt("disk write of " + std::to_string(r.length) + " bytes at " + std::to_string(r.offset) +
                     " is not whole sectors");
    }
    if (r.offset > disk_bytes || r.length > disk_bytes - r.offset) {
      return Corrupt("disk write at " + std::to_string(r.offset) + " runs past the end of the disk");
    }
    if (!r.zero && !d.GetBytes(r.length, &r.data)) return Malformed("disk-writes");
    FERRY_RETURN_IF_ERROR(fn(r));
  }
  if (d.remaining() != 0) return Malformed("disk-writes");
  return Status::Ok();
}

}  // namespace ferry::migrate
