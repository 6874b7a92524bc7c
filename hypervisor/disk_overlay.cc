#include "disk_overlay.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace ferry::hypervisor {
namespace {

// A run of contiguous sectors is written in pieces of at most this many bytes.
constexpr uint64_t kMaxRunBytes = 1ull << 20;

bool PwriteAll(int fd, const uint8_t* buf, uint64_t len, uint64_t offset) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, buf, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    buf += n;
    len -= n;
    offset += n;
  }
  return true;
}

}  // namespace

uint64_t DiskOverlay::Growth(uint64_t sector, uint64_t count) const {
  uint64_t held = 0;
  for (auto it = sectors_.lower_bound(sector); it != sectors_.end() && it->first < sector + count; ++it) ++held;
  return (count - held) * FERRY_BLK_SECTOR;
}

void DiskOverlay::Put(uint64_t sector, uint64_t count, const uint8_t* data) {
  for (uint64_t i = 0; i < count; ++i) {
    std::memcpy(sectors_[sector + i].data(), data + i * FERRY_BLK_SECTOR, FERRY_BLK_SECTOR);
  }
}

void DiskOverlay::ReadOver(uint64_t sector, uint64_t count, uint8_t* buf) const {
  for (auto it = sectors_.lower_bound(sector); it != sectors_.end() && it->first < sector + count; ++it) {
    std::memcpy(buf + (it->first - sector) * FERRY_BLK_SECTOR, it->second.data(), FERRY_BLK_SECTOR);
  }
}

bool DiskOverlay::WriteTo(int fd) const {
  std::vector<uint8_t> run;
  uint64_t run_start = 0;
  auto flush = [&] {
    bool ok = run.empty() || PwriteAll(fd, run.data(), run.size(), run_start * FERRY_BLK_SECTOR);
    run.clear();
    return ok;
  };
  for (const auto& [sector, data] : sectors_) {
    bool extends = !run.empty() && sector == run_start + run.size() / FERRY_BLK_SECTOR;
    if (!extends || run.size() >= kMaxRunBytes) {
      if (!flush()) return false;
      run_start = sector;
    }
    run.insert(run.end(), data.begin(), data.end());
  }
  return flush();
}

void DiskOverlay::Clear() { sectors_.clear(); }

}  // namespace ferry::hypervisor
