// ReadSnapshot: maps the file read-only, validates it whole, and fills a fresh GuestMemory.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <optional>

#include "ferry/base/clock.h"
#include "ferry/hypervisor/snapshot.h"
#include "snapshot_format.h"

namespace ferry::hypervisor {
namespace {

// Owns a read-only mapping of a whole file.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError("open " + path);
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path);
    if (!S_ISREG(st.st_mode)) return InvalidArgument(path + " is not a regular file");
    MappedFile f;
    f.size_ = static_cast<size_t>(st.st_size);
    if (f.size_ == 0) return f;
    void* p = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoError("mmap " + path);
    f.data_ = static_cast<const uint8_t*>(p);
    return f;
  }
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    // SAFETY: exactly the mapping made in Open().
    if (data_) munmap(const_cast<uint8_t*>(data_), size_);
  }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

Result<LoadedSnapshot> ReadSnapshot(const std::string& path) {
  uint64_t t0 = MonotonicNs();
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status().Annotate("snapshot");
  std::optional<GuestMemory> memory;
  snapshot::RamSink sink{
      [&](uint64_t mem_bytes) -> Status {
        FERRY_ASSIGN_OR_RETURN(auto m, GuestMemory::Create(mem_bytes));
        memory.emplace(std::move(m));
        return Status::Ok();
      },
      [&](uint64_t offset, std::span<const uint8_t> bytes) -> Status {
        return memory->WriteThroughFd(offset, bytes.data(), bytes.size());
      }};
  VmState state;
  snapshot::ParseStats parse_stats;
  Status st = snapshot::Parse(file->bytes(), &state, sink, &parse_stats);
  if (!st.ok()) return st.Annotate("snapshot " + path);
  SnapshotStats stats;
  stats.file_bytes = file->bytes().size();
  stats.ram_bytes = memory->size();
  stats.data_chunks = parse_stats.data_chunks;
  stats.zero_chunks = memory->size() / snapshot::kChunkBytes - parse_stats.data_chunks;
  stats.elapsed_ns = MonotonicNs() - t0;
  return LoadedSnapshot{std::move(state), std::move(*memory), stats};
}

}  // namespace ferry::hypervisor
