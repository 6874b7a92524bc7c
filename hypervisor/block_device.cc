#include "block_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ferry::hypervisor {
namespace {

// pread/pwrite the whole range (short transfers retried); false on an I/O error.
template <typename Op>
bool TransferAll(Op op, uint8_t* buf, uint64_t len, uint64_t offset) {
  while (len > 0) {
    ssize_t n = op(buf, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf += n;
    len -= n;
    offset += n;
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> BlockDevice::Open(const std::string& path, GuestMemory& memory) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open disk image " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat disk image " + path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return InvalidArgument("disk image " + path + " is not a file");
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0 || size % FERRY_BLK_SECTOR != 0) {
    return InvalidArgument("disk image " + path + " must be a non-empty multiple of 512 bytes (it has " +
                           std::to_string(size) + ")");
  }
  return std::unique_ptr<BlockDevice>(new BlockDevice(std::move(fd), size / FERRY_BLK_SECTOR, memory));
}

uint32_t BlockDevice::Setup(uint64_t ring_gpa, uint64_t entries) {
  std::lock_guard lock(mu_);
  return queue_.Setup(ring_gpa, entries);
}

uint32_t BlockDevice::Notify() {
  std::lock_guard lock(mu_);
  if (queue_.broken()) return FERRY_E_BROKEN;
  if (!queue_.ready()) return FERRY_E_INVAL;
  while (auto d = queue_.Peek()) queue_.Complete(Serve(*d));
  return queue_.broken() ? FERRY_E_BROKEN : FERRY_E_OK;
}

uint16_t BlockDevice::Serve(const ferry_desc& d) {
  auto bad = [&] {
    ++stats_.bad_requests;
    return static_cast<uint16_t>(FERRY_STATUS_BAD_REQUEST);
  };
  if (d.op == FERRY_BLK_FLUSH) {
    if (d.len != 0) return bad();
    ++stats_.flushes;
    // Sticky: after a failed fdatasync the kernel may have dropped dirty pages, and a later
    // successful one would not prove the earlier writes durable.
    if (flush_failed_ || (unflushed_ && ::fdatasync(fd_.get()) != 0)) {
      flush_failed_ = true;
      ++stats_.io_errors;
      return FERRY_STATUS_IOERR;
    }
    unflushed_ = false;
    return FERRY_STATUS_OK;
  }
  if (d.op != FERRY_BLK_READ && d.op != FERRY_BLK_WRITE) return bad();
  if (d.len == 0 || d.len % FERRY_BLK_SECTOR != 0 || d.len > FERRY_BLK_MAX_BYTES) return bad();
  const uint64_t count = d.len / FERRY_BLK_SECTOR;
  if (d.sector > sectors_ || count > sectors_ - d.sector) return bad();
  if (!queue_.BufferOk(d.addr, d.len)) return bad();
  uint8_t* buf = memory_.host() + d.addr;
  const uint64_t offset = d.sector * FERRY_BLK_SECTOR;
  const int fd = fd_.get();
  if (d.op == FERRY_BLK_READ) {
    bool ok = TransferAll([fd](uint8_t* b, uint64_t n, off_t o) { return ::pread(fd, b, n, o); }, buf, d.len, offset);
    memory_.MarkDirty(d.addr, d.len);  // a device write into guest RAM, even a partial one
    if (!ok) {
      ++stats_.io_errors;
      return FERRY_STATUS_IOERR;
    }
    ++stats_.reads;
    stats_.bytes_read += d.len;
    return FERRY_STATUS_OK;
  }
  if (journaling_) {
    // One copy serves both: the guest may rewrite its buffer meanwhile, and the journal must
    // hold exactly what reached the image.
    DiskWrite w{offset, std::vector<uint8_t>(buf, buf + d.len)};
    bool ok = TransferAll([fd](uint8_t* b, uint64_t n, off_t o) { return ::pwrite(fd, b, n, o); }, w.data.data(),
                          d.len, offset);
    unflushed_ = true;
    if (!ok) {
      ++stats_.io_errors;
      return FERRY_STATUS_IOERR;
    }
    if (journal_bytes_ + d.len > journal_cap_) {
      journal_overflow_ = true;
    } else {
      journal_bytes_ += d.len;
      journal_.push_back(std::move(w));
    }
    ++stats_.writes;
    stats_.bytes_written += d.len;
    return FERRY_STATUS_OK;
  }
  bool ok = TransferAll([fd](uint8_t* b, uint64_t n, off_t o) { return ::pwrite(fd, b, n, o); }, buf, d.len, offset);
  unflushed_ = true;
  if (!ok) {
    ++stats_.io_errors;
    return FERRY_STATUS_IOERR;
  }
  ++stats_.writes;
  stats_.bytes_written += d.len;
  return FERRY_STATUS_OK;
}

void BlockDevice::StartJournal(uint64_t cap_bytes) {
  std::lock_guard lock(mu_);
  journaling_ = true;
  journal_overflow_ = false;
  journal_cap_ = cap_bytes;
  journal_bytes_ = 0;
  journal_.clear();
}

Result<std::vector<DiskWrite>> BlockDevice::TakeJournal() {
  std::lock_guard lock(mu_);
  if (!journaling_) return InvalidArgument("the disk journal is off");
  if (journal_overflow_) {
    return Status(ErrorCode::kBusy, "the disk journal overflowed (" + std::to_string(journal_cap_ >> 20) +
                                        " MiB written in one checkpoint)");
  }
  std::vector<DiskWrite> out;
  out.swap(journal_);
  journal_bytes_ = 0;
  return out;
}

void BlockDevice::StopJournal() {
  std::lock_guard lock(mu_);
  journaling_ = false;
  journal_.clear();
  journal_bytes_ = 0;
}

Status BlockDevice::Quiesce() {
  std::lock_guard lock(mu_);
  if (flush_failed_) return Internal("the disk image failed an earlier flush");
  if (!unflushed_) return Status::Ok();
  if (::fdatasync(fd_.get()) != 0) {
    flush_failed_ = true;
    return ErrnoError("flush the disk image");
  }
  unflushed_ = false;
  return Status::Ok();
}

BlockState BlockDevice::Save() const {
  std::lock_guard lock(mu_);
  return BlockState{true, sectors_, queue_.Save()};
}

Status BlockDevice::Restore(const BlockState& saved) {
  if (!saved.present) return Status::Ok();  // saved before the guest had a disk: nothing set up
  if (saved.sectors != sectors_) {
    return InvalidArgument("the disk image has " + std::to_string(sectors_) + " sectors but the saved VM had " +
                           std::to_string(saved.sectors) + " (a different disk?)");
  }
  std::lock_guard lock(mu_);
  return queue_.Restore(saved.queue);
}

BlockStats BlockDevice::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace ferry::hypervisor
