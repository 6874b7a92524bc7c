// The replication messages of the migration protocol (PROTOCOL.md, "Replication"): a
// checkpoint's frame counts and state, its acknowledgement, disk writes, and the per-stream
// end of an epoch's pages. Pure encoders and validating decoders, like protocol.h.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/migrate/protocol.h"

namespace ferry::migrate {

// One kDiskWrites frame carries at most this much data and this many records.
inline constexpr uint32_t kMaxDiskWriteBytes = 4u << 20;
inline constexpr uint32_t kMaxDiskWriteRecords = 8192;
inline constexpr size_t kDiskRecordHeaderSize = 13;  // u64 offset, u32 length, u8 flags
inline constexpr uint32_t kMaxDiskWritesPayload =
    4 + kMaxDiskWriteRecords * kDiskRecordHeaderSize + kMaxDiskWriteBytes;

struct CheckpointMsg {
  uint64_t epoch = 0;                   // 1, 2, ... consecutive
  std::vector<uint64_t> stream_frames;  // frames each data stream carried so far, its epoch-end included
  uint32_t disk_frames = 0;             // kDiskWrites frames since the previous checkpoint (the first: the image copy too)
  std::vector<uint8_t> vm_state;        // hypervisor::EncodeVmState
};
std::vector<uint8_t> EncodeCheckpoint(const CheckpointMsg& m);
Result<CheckpointMsg> DecodeCheckpoint(std::span<const uint8_t> p, uint32_t streams);

// kCheckpointAck: u64 epoch.
std::vector<uint8_t> EncodeEpoch(uint64_t epoch);
Result<uint64_t> DecodeEpoch(std::span<const uint8_t> p);

struct EpochEnd {
  uint64_t epoch = 0;
  uint64_t pages = 0;   // page records this stream carried for the epoch
  uint64_t frames = 0;  // frames this stream carried before this one
};
std::vector<uint8_t> EncodeEpochEnd(const EpochEnd& m);
Result<EpochEnd> DecodeEpochEnd(std::span<const uint8_t> p);

// A disk write record: `zero` means `length` zero bytes (no data on the wire).
struct DiskRecord {
  uint64_t offset = 0;
  uint32_t length = 0;
  bool zero = false;
  std::span<const uint8_t> data;
};

// Builds kDiskWrites payloads: Add() until full() (then Finish() and Start() again).
class DiskWritesBuilder {
 public:
  DiskWritesBuilder() { Start(); }
  void Start();
  // True if a record of `length` data bytes still fits.
  bool Fits(uint32_t length) const;
  void Add(uint64_t offset, std::span<const uint8_t> data);
  void AddZero(uint64_t offset, uint32_t length);
  uint32_t count() const { return count_; }
  std::span<const uint8_t> Finish();

 private:
  std::vector<uint8_t> buf_;
  uint32_t count_ = 0;
  uint64_t data_bytes_ = 0;
};

// Validates every record (sector-aligned offset and length, 1..kMaxDiskWriteBytes, the
// whole record below `disk_bytes`, no bytes left over) and hands each to `fn` in order.
Status DecodeDiskWrites(std::span<const uint8_t> payload, uint64_t disk_bytes,
                        const std::function<Status(const DiskRecord&)>& fn);

}  // namespace ferry::migrate
