#include "ferry/hypervisor/guest_memory.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>

#include <algorithm>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ferry::hypervisor {

Result<GuestMemory> GuestMemory::Create(uint64_t bytes) {
  if (bytes == 0 || bytes % (2u << 20) != 0) {
    return InvalidArgument("guest memory must be a non-zero multiple of 2 MiB");
  }
  UniqueFd fd(memfd_create("ferry-guest-ram", MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoError("memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return ErrnoError("ftruncate guest memory");
  // MAP_NORESERVE: guest RAM is populated on first touch, so a 4 GiB guest starts instantly.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoError("mmap guest memory");
  return GuestMemory(std::move(fd), static_cast<uint8_t*>(p), bytes);
}

GuestMemory::~GuestMemory() {
  // SAFETY: base_/size_ are exactly the mapping made in Create(); vCPUs are gone by now
  // because Vm destroys them before its memory.
  if (base_) munmap(base_, size_);
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      device_dirty_(std::move(other.device_dirty_)) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    if (base_) munmap(base_, size_);
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    device_dirty_ = std::move(other.device_dirty_);
  }
  return *this;
}

Result<std::span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) const {
  if (!Contains(gpa, len)) {
    return InvalidArgument("guest address range [" + std::to_string(gpa) + ", +" + std::to_string(len) +
                           ") is outside guest memory");
  }
  return std::span<uint8_t>(base_ + gpa, len);
}

Status GuestMemory::Read(uint64_t gpa, void* out, uint64_t len) const {
  FERRY_ASSIGN_OR_RETURN(auto s, Slice(gpa, len));
  std::memcpy(out, s.data(), len);
  return Status::Ok();
}

void GuestMemory::MarkDirty(uint64_t gpa, uint64_t len) {
  if (len == 0 || !Contains(gpa, len)) return;
  for (uint64_t page = gpa / kPageSize; page <= (gpa + len - 1) / kPageSize; ++page) device_dirty_.SetAtomic(page);
}

Status GuestMemory::WriteThroughFd(uint64_t gpa, const void* data, uint64_t len) {
  if (!Contains(gpa, len)) return InvalidArgument("write beyond guest memory");
  MarkDirty(gpa, len);
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::pwrite(fd_.get(), p, len, static_cast<off_t>(gpa));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("write guest memory");
    p += n;
    gpa += n;
    len -= n;
  }
  return Status::Ok();
}

Status GuestMemory::WriteVThroughFd(uint64_t gpa, std::span<const std::span<const uint8_t>> parts) {
  std::vector<iovec> iov;
  iov.reserve(parts.size());
  uint64_t len = 0;
  for (auto p : parts) {
    iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
    len += p.size();
  }
  if (!Contains(gpa, len)) return InvalidArgument("write beyond guest memory");
  MarkDirty(gpa, len);
  size_t first = 0;
  while (len > 0) {
    int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = ::pwritev(fd_.get(), iov.data() + first, count, static_cast<off_t>(gpa));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("write guest memory");
    gpa += n;
    len -= n;
    // Skip the iovecs written in full and trim a partly written one.
    while (n > 0 && first < iov.size()) {
      size_t take = std::min<size_t>(n, iov[first].iov_len);
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + take;
      iov[first].iov_len -= take;
      n -= take;
      if (iov[first].iov_len == 0) ++first;
    }
  }
  return Status::Ok();
}

Status GuestMemory::Discard(uint64_t gpa, uint64_t len) {
  if (!Contains(gpa, len) || gpa % kPageSize != 0 || len % kPageSize != 0) {
    return InvalidArgument("discard of a range that is not whole pages of guest memory");
  }
  if (len == 0) return Status::Ok();
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(gpa), static_cast<off_t>(len)) != 0) {
    return ErrnoError("discard guest memory (punch a hole in the memfd)");
  }
  return Status::Ok();
}

Status GuestMemory::ForEachPopulatedRange(const std::function<void(uint64_t, uint64_t)>& fn) const {
  off_t pos = 0;
  const off_t end = static_cast<off_t>(size_);
  while (pos < end) {
    off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return ErrnoError("lseek(SEEK_DATA) on guest memory");
    }
    off_t hole = ::lseek(fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoError("lseek(SEEK_HOLE) on guest memory");
    fn(static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data));
    pos = hole;
  }
  return Status::Ok();
}

Status GuestMemory::Write(uint64_t gpa, const void* data, uint64_t len) {
  FERRY_ASSIGN_OR_RETURN(auto s, Slice(gpa, len));
  std::memcpy(s.data(), data, len);
  MarkDirty(gpa, len);
  return Status::Ok();
}

}  // namespace ferry::hypervisor
