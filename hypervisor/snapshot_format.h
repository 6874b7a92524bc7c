// The snapshot file format's encoders and its whole-file parser (SNAPSHOT.md).
// Pure functions over byte spans, so the parser is unit-tested and fuzzed on truncated and
// corrupted images without touching KVM. Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::hypervisor::snapshot {

inline constexpr uint8_t kMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'N', 'P'};
// Version 2 added the device configuration (config) and the block and net states (devices).
inline constexpr uint32_t kVersion = 2;
inline constexpr size_t kFileHeaderSize = 32;
inline constexpr size_t kSectionHeaderSize = 24;
inline constexpr uint32_t kChunkBytes = 64 * 1024;
inline constexpr uint64_t kMaxMemBytes = 64ull << 30;

enum SectionType : uint32_t { kConfig = 1, kVcpu = 2, kDevices = 3, kRam = 4, kEnd = 0xffff };

std::vector<uint8_t> EncodeFileHeader(uint32_t section_count);
std::vector<uint8_t> EncodeSectionHeader(uint32_t type, uint64_t length, uint64_t checksum);
std::vector<uint8_t> EncodeConfig(const VmConfig& config);
std::vector<uint8_t> EncodeDevices(const VmState& state);
// Decoders of the config and devices payloads (shared with the migration stream).
Status DecodeConfig(std::span<const uint8_t> p, VmConfig* c);
Status DecodeDevices(std::span<const uint8_t> p, VmState* s);
// The fixed prefix of the RAM section; chunk records follow, each a kRecordHeaderSize header
// (chunk index u64, XXH3-64 of the chunk u64) and kChunkBytes of data. The RAM section's
// checksum covers the prefix and the record headers; each chunk's data is covered by its own
// checksum, so both ends can hash and copy chunks in parallel.
inline constexpr size_t kRamPrefixSize = 24;
inline constexpr size_t kRecordHeaderSize = 16;
inline constexpr uint64_t kRecordSize = kRecordHeaderSize + kChunkBytes;
std::vector<uint8_t> EncodeRamPrefix(uint64_t mem_bytes, uint64_t data_chunks);

// Receives RAM once the config is known: `allocate(mem_bytes)` is called once, before any
// `chunk(offset, bytes)`; offsets are validated to lie inside mem_bytes, and each chunk's
// checksum is verified before it is delivered. `chunk` is called from several threads.
struct RamSink {
  std::function<Status(uint64_t mem_bytes)> allocate;
  std::function<Status(uint64_t offset, std::span<const uint8_t> bytes)> chunk;
};

struct ParseStats {
  uint64_t data_chunks = 0;
};

// Validates and decodes a whole snapshot image. Every section's checksum is verified before
// its payload is decoded; every count, length and offset is checked before use.
Status Parse(std::span<const uint8_t> file, VmState* state, const RamSink& ram, ParseStats* stats);

}  // namespace ferry::hypervisor::snapshot
