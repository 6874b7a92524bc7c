// WriteSnapshot: streams a paused VM into "<path>.tmp-<pid>", then fsync and rename.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "ferry/base/checksum.h"
#include "ferry/base/clock.h"
#include "ferry/base/coding.h"
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

// Buffered writer over an fd with vectored writes for large guest-memory chunks.
class FileSink {
 public:
  explicit FileSink(int fd) : fd_(fd) {}
  Status Append(const void* data, size_t len) {
    if (len == 0) return Status::Ok();  // a zero-length iovec would stall Flush's progress
    iov_.push_back({const_cast<void*>(data), len});
    pending_ += len;
    if (iov_.size() >= 64 || pending_ >= (8u << 20)) return Flush();
    return Status::Ok();
  }
  // Copies small buffers so callers may reuse theirs.
  Status AppendCopy(std::vector<uint8_t> bytes) {
    owned_.push_back(std::move(bytes));
    return Append(owned_.back().data(), owned_.back().size());
  }
  Status Flush() {
    size_t i = 0;
    while (i < iov_.size()) {
      ssize_t n = ::writev(fd_, iov_.data() + i, static_cast<int>(std::min<size_t>(iov_.size() - i, IOV_MAX)));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("write snapshot");
      }
      written_ += n;
      while (i < iov_.size() && static_cast<size_t>(n) >= iov_[i].iov_len) {
        n -= iov_[i].iov_len;
        ++i;
      }
      if (i < iov_.size()) {
        iov_[i].iov_base = static_cast<uint8_t*>(iov_[i].iov_base) + n;
        iov_[i].iov_len -= n;
      }
    }
    iov_.clear();
    owned_.clear();
    pending_ = 0;
    return Status::Ok();
  }
  uint64_t written() const { return written_; }

 private:
  int fd_;
  std::vector<iovec> iov_;
  std::vector<std::vector<uint8_t>> owned_;
  size_t pending_ = 0;
  uint64_t written_ = 0;
};

Status AppendSection(FileSink& sink, uint32_t type, std::vector<uint8_t> payload) {
  FERRY_RETURN_IF_ERROR(sink.AppendCopy(snapshot::EncodeSectionHeader(type, payload.size(), Checksum64(payload))));
  return sink.AppendCopy(std::move(payload));
}

Status WriteAll(int fd, const VmState& state, const GuestMemory& memory, SnapshotStats* stats) {
  FileSink sink(fd);
  const uint32_t sections = 1 + static_cast<uint32_t>(state.vcpus.size()) + 1 + 1 + 1;
  FERRY_RETURN_IF_ERROR(sink.AppendCopy(snapshot::EncodeFileHeader(sections)));
  FERRY_RETURN_IF_ERROR(AppendSection(sink, snapshot::kConfig, snapshot::EncodeConfig(state.config)));
  for (const VcpuState& v : state.vcpus) {
    Encoder e;
    EncodeVcpuState(v, e);
    FERRY_RETURN_IF_ERROR(AppendSection(sink, snapshot::kVcpu, e.Take()));
  }
  FERRY_RETURN_IF_ERROR(AppendSection(sink, snapshot::kDevices, snapshot::EncodeDevices(state)));

  // RAM: find the non-zero chunks first (cheap: a non-zero word ends the scan early), so the
  // section length and chunk count are known before streaming.
  const uint64_t total_chunks = memory.size() / kChunkBytes;
  std::vector<uint64_t> data_chunks;
  data_chunks.reserve(total_chunks);
  for (uint64_t c = 0; c < total_chunks; ++c) {
    if (!IsZero(memory.host() + c * kChunkBytes, kChunkBytes)) data_chunks.push_back(c);
  }
  std::vector<uint8_t> prefix = snapshot::EncodeRamPrefix(memory.size(), data_chunks.size());
  std::vector<uint8_t> indices(data_chunks.size() * 8);
  Checksummer sum;
  sum.Update(prefix.data(), prefix.size());
  for (size_t i = 0; i < data_chunks.size(); ++i) {
    StoreLe64(&indices[i * 8], data_chunks[i]);
    sum.Update(&indices[i * 8], 8);
    sum.Update(memory.host() + data_chunks[i] * kChunkBytes, kChunkBytes);
  }
  uint64_t ram_len = prefix.size() + data_chunks.size() * (8 + uint64_t{kChunkBytes});
  FERRY_RETURN_IF_ERROR(sink.AppendCopy(snapshot::EncodeSectionHeader(snapshot::kRam, ram_len, sum.Digest())));
  FERRY_RETURN_IF_ERROR(sink.AppendCopy(std::move(prefix)));
  for (size_t i = 0; i < data_chunks.size(); ++i) {
    FERRY_RETURN_IF_ERROR(sink.Append(&indices[i * 8], 8));
    FERRY_RETURN_IF_ERROR(sink.Append(memory.host() + data_chunks[i] * kChunkBytes, kChunkBytes));
  }
  FERRY_RETURN_IF_ERROR(AppendSection(sink, snapshot::kEnd, {}));
  FERRY_RETURN_IF_ERROR(sink.Flush());
  stats->file_bytes = sink.written();
  stats->ram_bytes = memory.size();
  stats->data_chunks = data_chunks.size();
  stats->zero_chunks = total_chunks - data_chunks.size();
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
