// DiskOverlay: guest writes held in memory instead of the disk image (post-copy: until the
// last page arrived, the source may take the VM back, and it shares the image).
//
// Sector-granular: each held 512-byte sector is the last bytes the guest wrote to it, so a
// later write over the same sectors replaces the earlier bytes and a read is the image's
// bytes with every held sector laid over them. Memory: 512 bytes per held sector plus a map
// node (about 10% more); bytes() counts the sector payload only.
// Not thread-safe: BlockDevice guards it with its lock.
#pragma once

#include <array>
#include <cstdint>
#include <map>

#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {

class DiskOverlay {
 public:
  // Bytes that holding sectors [sector, sector + count) would add (sectors not held yet).
  uint64_t Growth(uint64_t sector, uint64_t count) const;
  // Holds `count` sectors of `data` from `sector` on, replacing what was held there.
  void Put(uint64_t sector, uint64_t count, const uint8_t* data);
  // Lays every held sector of [sector, sector + count) over `buf` (the image's bytes).
  void ReadOver(uint64_t sector, uint64_t count, uint8_t* buf) const;
  // Writes every held sector to `fd` at its offset, in sector order, contiguous runs in one
  // pwrite each; false on an I/O error (errno set). The overlay is left as it was.
  bool WriteTo(int fd) const;
  void Clear();

  uint64_t bytes() const { return sectors_.size() * FERRY_BLK_SECTOR; }

 private:
  using Sector = std::array<uint8_t, FERRY_BLK_SECTOR>;
  std::map<uint64_t, Sector> sectors_;  // by sector number
};

}  // namespace ferry::hypervisor
