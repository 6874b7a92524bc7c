#include "snapshot_format.h"

#include <cstring>

#include "ferry/base/checksum.h"
#include "ferry/base/coding.h"
#include "ferry/base/parallel.h"
#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor::snapshot {
namespace {

struct SectionHeader {
  uint32_t type = 0;
  uint32_t flags = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;
};

std::string Name(uint32_t type) {
  switch (type) {
    case kConfig: return "config";
    case kVcpu: return "vcpu";
    case kDevices: return "devices";
    case kRam: return "ram";
    case kEnd: return "end";
  }
  return "type " + std::to_string(type);
}

Status DecodeRam(std::span<const uint8_t> p, uint64_t mem_bytes, uint64_t section_sum, const RamSink& ram,
                 ParseStats* stats) {
  Decoder d(p);
  uint32_t page_size = 0, chunk_bytes = 0;
  uint64_t section_mem = 0, chunks = 0;
  d.GetU32(&page_size);
  d.GetU32(&chunk_bytes);
  d.GetU64(&section_mem);
  d.GetU64(&chunks);
  if (!d.ok()) return Corrupt("ram section header is truncated");
  if (page_size != 4096 || chunk_bytes != kChunkBytes) return Corrupt("ram section has an unsupported chunk size");
  if (section_mem != mem_bytes) return Corrupt("ram section size does not match the config");
  const uint64_t max_chunks = mem_bytes / kChunkBytes;
  if (chunks > max_chunks) return Corrupt("ram section lists more chunks than memory holds");
  if (d.remaining() != chunks * kRecordSize) return Corrupt("ram section length does not match its chunk count");
  // The section checksum covers the prefix and every record header: verify it, and the
  // order and range of the chunk indices, before touching any memory.
  Checksummer sum;
  sum.Update(p.data(), kRamPrefixSize);
  const uint8_t* records = p.data() + kRamPrefixSize;
  uint64_t next_min = 0;
  for (uint64_t i = 0; i < chunks; ++i) {
    const uint8_t* hdr = records + i * kRecordSize;
    sum.Update(hdr, kRecordHeaderSize);
    uint64_t index = LoadLe64(hdr);
    if (index < next_min || index >= max_chunks) return Corrupt("ram chunk index out of order or range");
    next_min = index + 1;
  }
  if (sum.Digest() != section_sum) return Corrupt("ram section checksum mismatch");
  FERRY_RETURN_IF_ERROR(ram.allocate(mem_bytes));
  FERRY_RETURN_IF_ERROR(ParallelFor(chunks, BulkWorkers(), [&](uint64_t begin, uint64_t end, unsigned) -> Status {
    for (uint64_t i = begin; i < end; ++i) {
      const uint8_t* hdr = records + i * kRecordSize;
      std::span<const uint8_t> data(hdr + kRecordHeaderSize, kChunkBytes);
      if (Checksum64(data) != LoadLe64(hdr + 8)) {
        return Corrupt("ram chunk " + std::to_string(LoadLe64(hdr)) + " checksum mismatch");
      }
      FERRY_RETURN_IF_ERROR(ram.chunk(LoadLe64(hdr) * kChunkBytes, data));
    }
    return Status::Ok();
  }));
  stats->data_chunks = chunks;
  return Status::Ok();
}

}  // namespace

Status DecodeConfig(std::span<const uint8_t> p, VmConfig* c) {
  Decoder d(p);
  d.GetU64(&c->mem_bytes);
  d.GetU32(&c->vcpus);
  d.GetString(&c->guest_path, 4096);
  d.GetString(&c->guest_args, FERRY_MAX_ARGS);
  d.GetString(&c->devices.disk_path, 4096);
  d.GetString(&c->devices.tap, 15);  // IFNAMSIZ - 1
  d.GetString(&c->devices.bridge, 15);
  std::span<const uint8_t> mac;
  d.GetBytes(6, &mac);
  if (!d.ok() || d.remaining() != 0) return Corrupt("config section is malformed");
  std::copy(mac.begin(), mac.end(), c->devices.mac.begin());
  if (c->mem_bytes == 0 || c->mem_bytes > kMaxMemBytes || c->mem_bytes % (2u << 20) != 0) {
    return Corrupt("config section has an invalid memory size");
  }
  if (c->vcpus == 0 || c->vcpus > FERRY_MAX_VCPUS) return Corrupt("config section has an invalid vCPU count");
  return Status::Ok();
}

Status DecodeDevices(std::span<const uint8_t> p, VmState* s) {
  Decoder d(p);
  FERRY_RETURN_IF_ERROR(DecodeConsoleState(d, &s->console));
  FERRY_RETURN_IF_ERROR(DecodeClockState(d, &s->clock));
  FERRY_RETURN_IF_ERROR(DecodeBlockState(d, &s->block));
  FERRY_RETURN_IF_ERROR(DecodeNetState(d, &s->net));
  if (!d.GetString(&s->guest_report, 4096)) return Corrupt("devices section: bad guest report");
  if (d.remaining() != 0) return Corrupt("devices section has trailing bytes");
  return Status::Ok();
}

std::vector<uint8_t> EncodeFileHeader(uint32_t section_count) {
  Encoder e;
  e.PutBytes(kMagic);
  e.PutU32(kVersion);
  e.PutU32(0);  // flags
  e.PutU32(section_count);
  e.PutU32(0);  // reserved
  e.PutU64(Checksum64(e.bytes()));
  return e.Take();
}

std::vector<uint8_t> EncodeSectionHeader(uint32_t type, uint64_t length, uint64_t checksum) {
  Encoder e;
  e.PutU32(type);
  e.PutU32(0);
  e.PutU64(length);
  e.PutU64(checksum);
  return e.Take();
}

std::vector<uint8_t> EncodeConfig(const VmConfig& c) {
  Encoder e;
  e.PutU64(c.mem_bytes);
  e.PutU32(c.vcpus);
  e.PutString(c.guest_path);
  e.PutString(c.guest_args);
  e.PutString(c.devices.disk_path);
  e.PutString(c.devices.tap);
  e.PutString(c.devices.bridge);
  e.PutBytes(c.devices.mac);
  return e.Take();
}

std::vector<uint8_t> EncodeDevices(const VmState& state) {
  Encoder e;
  EncodeConsoleState(state.console, e);
  EncodeClockState(state.clock, e);
  EncodeBlockState(state.block, e);
  EncodeNetState(state.net, e);
  e.PutString(state.guest_report);
  return e.Take();
}

std::vector<uint8_t> EncodeRamPrefix(uint64_t mem_bytes, uint64_t data_chunks) {
  Encoder e;
  e.PutU32(4096);
  e.PutU32(kChunkBytes);
  e.PutU64(mem_bytes);
  e.PutU64(data_chunks);
  return e.Take();
}

Status Parse(std::span<const uint8_t> file, VmState* state, const RamSink& ram, ParseStats* stats) {
  if (file.size() < kFileHeaderSize) return Corrupt("file is too short to be a Ferry snapshot");
  if (std::memcmp(file.data(), kMagic, sizeof kMagic) != 0) return Corrupt("not a Ferry snapshot (bad magic)");
  Decoder h(file.subspan(8, kFileHeaderSize - 8));
  uint32_t version = 0, flags = 0, sections = 0, reserved = 0;
  uint64_t header_sum = 0;
  h.GetU32(&version);
  h.GetU32(&flags);
  h.GetU32(&sections);
  h.GetU32(&reserved);
  h.GetU64(&header_sum);
  if (header_sum != Checksum64(file.data(), kFileHeaderSize - 8)) return Corrupt("snapshot header checksum mismatch");
  if (version != kVersion) {
    return Unsupported("snapshot format version " + std::to_string(version) + " is not supported (this build reads version " +
                       std::to_string(kVersion) + ")");
  }
  if (flags != 0) return Unsupported("snapshot uses unknown flags");
  if (sections < 4 || sections > 4 + FERRY_MAX_VCPUS) return Corrupt("snapshot has an invalid section count");

  *state = VmState{};
  bool have_config = false, have_devices = false, have_ram = false, have_end = false;
  size_t pos = kFileHeaderSize;
  for (uint32_t i = 0; i < sections; ++i) {
    if (file.size() - pos < kSectionHeaderSize) return Corrupt("snapshot is truncated (section " + std::to_string(i) + " header)");
    Decoder sd(file.subspan(pos, kSectionHeaderSize));
    SectionHeader sh;
    sd.GetU32(&sh.type);
    sd.GetU32(&sh.flags);
    sd.GetU64(&sh.length);
    sd.GetU64(&sh.checksum);
    pos += kSectionHeaderSize;
    if (sh.length > file.size() - pos) return Corrupt("snapshot is truncated (" + Name(sh.type) + " section)");
    auto payload = file.subspan(pos, sh.length);
    pos += sh.length;
    if (sh.flags != 0) return Corrupt(Name(sh.type) + " section has unknown flags");
    // RAM verifies its own two-level checksum (DecodeRam); every other section is hashed whole.
    if (sh.type != kRam && Checksum64(payload) != sh.checksum) {
      return Corrupt(Name(sh.type) + " section checksum mismatch");
    }
    if (have_end) return Corrupt("snapshot has sections after its end marker");
    switch (sh.type) {
      case kConfig:
        if (have_config) return Corrupt("snapshot has two config sections");
        FERRY_RETURN_IF_ERROR(DecodeConfig(payload, &state->config));
        have_config = true;
        break;
      case kVcpu: {
        if (!have_config) return Corrupt("vcpu section before config");
        if (state->vcpus.size() >= state->config.vcpus) return Corrupt("snapshot has more vCPU sections than vCPUs");
        Decoder d(payload);
        VcpuState vs;
        FERRY_RETURN_IF_ERROR(DecodeVcpuState(d, &vs));
        if (d.remaining() != 0) return Corrupt("vcpu section has trailing bytes");
        if (vs.index != state->vcpus.size()) return Corrupt("vcpu sections out of order");
        state->vcpus.push_back(std::move(vs));
        break;
      }
      case kDevices:
        if (have_devices) return Corrupt("snapshot has two devices sections");
        FERRY_RETURN_IF_ERROR(DecodeDevices(payload, state));
        have_devices = true;
        break;
      case kRam:
        if (!have_config || have_ram) return Corrupt("ram section out of place");
        FERRY_RETURN_IF_ERROR(DecodeRam(payload, state->config.mem_bytes, sh.checksum, ram, stats));
        have_ram = true;
        break;
      case kEnd:
        if (sh.length != 0) return Corrupt("end section has a payload");
        have_end = true;
        break;
      default:
        return Corrupt("unknown section " + Name(sh.type));
    }
  }
  if (!have_end) return Corrupt("snapshot has no end marker (incomplete file)");
  if (pos != file.size()) return Corrupt("snapshot has trailing bytes after its end marker");
  if (!have_config || !have_devices || !have_ram || state->vcpus.size() != state->config.vcpus) {
    return Corrupt("snapshot is missing sections");
  }
  return Status::Ok();
}

}  // namespace ferry::hypervisor::snapshot
