// WriteSnapshot: streams a paused VM into "<path>.tmp-<pid>", then fsync and rename.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "ferry/base/checksum.h"
#include "ferry/base/clock.h"
#include "ferry/base/coding.h"
#include "ferry/base/parallel.h"
#include "ferry/hypervisor/snapshot.h"
#include "snapshot_format.h"

namespace ferry::hypervisor {
namespace {

using snapshot::kChunkBytes;

bool IsZero(const uint8_t* p, size_t n) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < n / 8; i += 8) {
    if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) return false;
  }
  return true;
}

// pwritev until every byte of `iov` is written at `offset`.
Status PwritevAll(int fd, std::vector<iovec> iov, uint64_t offset) {
  size_t i = 0;
  while (i < iov.size()) {
    ssize_t n = ::pwritev(fd, iov.data() + i, static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX)),
                          static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("write snapshot");
    offset += n;
    while (i < iov.size() && static_cast<size_t>(n) >= iov[i].iov_len) {
      n -= iov[i].iov_len;
      ++i;
    }
    if (i < iov.size()) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + n;
      iov[i].iov_len -= n;
    }
  }
  return Status::Ok();
}

void AppendSection(Encoder& out, uint32_t type, const std::vector<uint8_t>& payload) {
  out.PutBytes(snapshot::EncodeSectionHeader(type, payload.size(), Checksum64(payload)));
  out.PutBytes(payload);
}

Status WriteAll(int fd, const VmState& state, const GuestMemory& memory, SnapshotStats* stats) {
  // Everything before RAM is a few KiB: encode it whole, write it once.
  Encoder meta;
  const uint32_t sections = 1 + static_cast<uint32_t>(state.vcpus.size()) + 1 + 1 + 1;
  meta.PutBytes(snapshot::EncodeFileHeader(sections));
  AppendSection(meta, snapshot::kConfig, snapshot::EncodeConfig(state.config));
  for (const VcpuState& v : state.vcpus) {
    Encoder e;
    EncodeVcpuState(v, e);
    AppendSection(meta, snapshot::kVcpu, e.bytes());
  }
  AppendSection(meta, snapshot::kDevices, snapshot::EncodeDevices(state));
  std::vector<iovec> meta_iov = {{const_cast<uint8_t*>(meta.bytes().data()), meta.size()}};
  FERRY_RETURN_IF_ERROR(PwritevAll(fd, meta_iov, 0));
  const uint64_t ram_header_off = meta.size();

  // RAM: only chunks in populated ranges of the memfd can hold data; of those, all-zero
  // chunks are skipped too (cheap: the first non-zero word ends the scan).
  std::vector<uint64_t> candidates;
  FERRY_RETURN_IF_ERROR(memory.ForEachPopulatedRange([&](uint64_t off, uint64_t len) {
    uint64_t first = off / kChunkBytes, last = (off + len + kChunkBytes - 1) / kChunkBytes;
    if (!candidates.empty() && candidates.back() >= first) first = candidates.back() + 1;
    for (uint64_t c = first; c < last && c < memory.size() / kChunkBytes; ++c) candidates.push_back(c);
  }));
  std::vector<uint64_t> data_chunks;
  data_chunks.reserve(candidates.size());
  for (uint64_t c : candidates) {
    if (!IsZero(memory.host() + c * kChunkBytes, kChunkBytes)) data_chunks.push_back(c);
  }
  const uint64_t n = data_chunks.size();
  const std::vector<uint8_t> prefix = snapshot::EncodeRamPrefix(memory.size(), n);
  const uint64_t records_off = ram_header_off + snapshot::kSectionHeaderSize + prefix.size();
  const uint64_t ram_len = prefix.size() + n * snapshot::kRecordSize;

  // Records are fixed-size, so each worker hashes its chunks and writes them at known offsets.
  std::vector<uint8_t> headers(n * snapshot::kRecordHeaderSize);
  FERRY_RETURN_IF_ERROR(ParallelFor(n, BulkWorkers(), [&](uint64_t begin, uint64_t end, unsigned) -> Status {
    constexpr uint64_t kBatch = 32;
    for (uint64_t b = begin; b < end; b += kBatch) {
      uint64_t e = std::min(end, b + kBatch);
      std::vector<iovec> iov;
      for (uint64_t i = b; i < e; ++i) {
        const uint8_t* data = memory.host() + data_chunks[i] * kChunkBytes;
        uint8_t* hdr = &headers[i * snapshot::kRecordHeaderSize];
        StoreLe64(hdr, data_chunks[i]);
        StoreLe64(hdr + 8, Checksum64(data, kChunkBytes));
        iov.push_back({hdr, snapshot::kRecordHeaderSize});
        iov.push_back({const_cast<uint8_t*>(data), kChunkBytes});
      }
      FERRY_RETURN_IF_ERROR(PwritevAll(fd, iov, records_off + b * snapshot::kRecordSize));
    }
    return Status::Ok();
  }));
  Checksummer sum;
  sum.Update(prefix.data(), prefix.size());
  sum.Update(headers.data(), headers.size());
  std::vector<uint8_t> ram_head = snapshot::EncodeSectionHeader(snapshot::kRam, ram_len, sum.Digest());
  ram_head.insert(ram_head.end(), prefix.begin(), prefix.end());
  std::vector<iovec> head_iov = {{ram_head.data(), ram_head.size()}};
  FERRY_RETURN_IF_ERROR(PwritevAll(fd, head_iov, ram_header_off));
  std::vector<uint8_t> end_section = snapshot::EncodeSectionHeader(snapshot::kEnd, 0, Checksum64(nullptr, 0));
  std::vector<iovec> end_iov = {{end_section.data(), end_section.size()}};
  const uint64_t end_off = records_off + n * snapshot::kRecordSize;
  FERRY_RETURN_IF_ERROR(PwritevAll(fd, end_iov, end_off));
  stats->file_bytes = end_off + end_section.size();
  stats->ram_bytes = memory.size();
  stats->data_chunks = n;
  stats->zero_chunks = memory.size() / kChunkBytes - n;
  return Status::Ok();
}
}  // namespace

Result<SnapshotStats> WriteSnapshot(const std::string& path, const VmState& state, const GuestMemory& memory,
                                    const SnapshotOptions& options) {
  uint64_t t0 = MonotonicNs();
  if (state.config.mem_bytes != memory.size()) return InvalidArgument("VM state and memory size disagree");
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoError("create " + tmp);
  SnapshotStats stats;
  Status st = WriteAll(fd.get(), state, memory, &stats);
  if (st.ok() && options.fsync && ::fsync(fd.get()) != 0) st = ErrnoError("fsync " + tmp);
  if (st.ok() && ::close(fd.Release()) != 0) st = ErrnoError("close " + tmp);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename to " + path);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st.Annotate("snapshot " + path);
  }
  stats.elapsed_ns = MonotonicNs() - t0;
  return stats;
}

}  // namespace ferry::hypervisor
