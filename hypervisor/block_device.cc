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
  std::lock_guard serve(serve_mu_);
  std::lock_guard lock(mu_);
  return queue_.Setup(ring_gpa, entries);
}

uint32_t BlockDevice::Notify() {
  std::lock_guard serve(serve_mu_);
  std::unique_lock lock(mu_);
  if (queue_.broken()) return FERRY_E_BROKEN;
  if (!queue_.ready()) return FERRY_E_INVAL;
  // At most one ring's worth per doorbell: a guest that keeps posting from another vCPU must
  // not hold the device (and status, which reads its stats) for as long as it likes. It rings
  // again for what it posted meanwhile.
  for (uint32_t served = 0; served < queue_.entries(); ++served) {
    auto d = queue_.Peek();
    if (!d) break;
    queue_.Complete(Serve(*d, lock));
  }
  return queue_.broken() ? FERRY_E_BROKEN : FERRY_E_OK;
}

uint16_t BlockDevice::Serve(const ferry_desc& d, std::unique_lock<std::mutex>& lock) {
  auto bad = [&] {
    ++stats_.bad_requests;
    return static_cast<uint16_t>(FERRY_STATUS_BAD_REQUEST);
  };
  if (d.op == FERRY_BLK_FLUSH) {
    if (d.len != 0) return bad();
    ++stats_.flushes;
    if (writes_refused_) {
      ++stats_.io_errors;
      return FERRY_STATUS_IOERR;
    }
    if (overlay_on_) return FERRY_STATUS_OK;  // durable at commit (see StartOverlay)
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
    if (overlay_on_) overlay_.ReadOver(d.sector, count, buf);
    ++stats_.reads;
    stats_.bytes_read += d.len;
    return FERRY_STATUS_OK;
  }
  return ServeWrite(d, buf, lock);
}

uint16_t BlockDevice::ServeWrite(const ferry_desc& d, uint8_t* buf, std::unique_lock<std::mutex>& lock) {
  const uint64_t count = d.len / FERRY_BLK_SECTOR;
  const uint64_t offset = d.sector * FERRY_BLK_SECTOR;
  if (!WaitForOverlayRoom(d.sector, count, lock)) {
    ++stats_.io_errors;
    return FERRY_STATUS_IOERR;
  }
  // With the journal on, one copy serves both: the guest may rewrite its buffer meanwhile, and
  // the journal must hold exactly what the write stored.
  std::vector<uint8_t> copy;
  if (journaling_) {
    copy.assign(buf, buf + d.len);
    buf = copy.data();
  }
  if (overlay_on_) {
    overlay_.Put(d.sector, count, buf);
    ++stats_.overlay_writes;
  } else {
    const int fd = fd_.get();
    bool ok = TransferAll([fd](uint8_t* b, uint64_t n, off_t o) { return ::pwrite(fd, b, n, o); }, buf, d.len, offset);
    unflushed_ = true;
    if (!ok) {
      ++stats_.io_errors;
      return FERRY_STATUS_IOERR;
    }
  }
  if (journaling_) {
    if (journal_bytes_ + d.len > journal_cap_) {
      journal_overflow_ = true;
    } else {
      journal_bytes_ += d.len;
      journal_.push_back(DiskWrite{offset, std::move(copy)});
    }
  }
  ++stats_.writes;
  stats_.bytes_written += d.len;
  return FERRY_STATUS_OK;
}

bool BlockDevice::WaitForOverlayRoom(uint64_t sector, uint64_t count, std::unique_lock<std::mutex>& lock) {
  bool counted = false;
  while (!writes_refused_ && overlay_on_ && overlay_.bytes() + overlay_.Growth(sector, count) > overlay_cap_) {
    if (!counted) ++stats_.overlay_waits;
    counted = true;
    const uint64_t epoch = overlay_epoch_;
    overlay_cv_.wait(lock, [&] { return overlay_epoch_ != epoch; });
  }
  return !writes_refused_;
}

void BlockDevice::StartOverlay(uint64_t cap_bytes) {
  std::lock_guard lock(mu_);
  overlay_on_ = true;
  overlay_cap_ = cap_bytes;
  ++overlay_epoch_;
  overlay_cv_.notify_all();
}

Status BlockDevice::CommitOverlay() {
  std::lock_guard lock(mu_);
  if (writes_refused_) return Refused("the disk overlay was discarded");
  if (!overlay_on_) return Status::Ok();
  unflushed_ = true;
  if (!overlay_.WriteTo(fd_.get())) {
    ++stats_.io_errors;
    return ErrnoError("commit the disk overlay to the image");
  }
  if (::fdatasync(fd_.get()) != 0) {
    flush_failed_ = true;
    return ErrnoError("flush the committed disk overlay");
  }
  unflushed_ = false;
  overlay_.Clear();
  overlay_on_ = false;
  ++overlay_epoch_;
  overlay_cv_.notify_all();
  return Status::Ok();
}

void BlockDevice::DiscardOverlay() {
  std::lock_guard lock(mu_);
  if (!overlay_on_) return;
  overlay_.Clear();
  overlay_on_ = false;
  writes_refused_ = true;
  ++overlay_epoch_;
  overlay_cv_.notify_all();
}

uint64_t BlockDevice::overlay_bytes() const {
  std::lock_guard lock(mu_);
  return overlay_.bytes();
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
  std::lock_guard serve(serve_mu_);
  std::lock_guard lock(mu_);
  return queue_.Restore(saved.queue);
}

BlockStats BlockDevice::stats() const {
  std::lock_guard lock(mu_);
  BlockStats s = stats_;
  s.overlay_bytes = overlay_.bytes();
  return s;
}

}  // namespace ferry::hypervisor
