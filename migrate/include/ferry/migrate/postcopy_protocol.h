// The post-copy messages of the migration protocol (PROTOCOL.md, "Post-copy"): the switchover
// (frame counts, the pages the destination does not hold, the vCPU and device state), the
// destination's report that every page has arrived, and the source's promise that it has
// stopped for good. Pure encoders and validating decoders, like protocol.h.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/migrate/protocol.h"

namespace ferry::migrate {

// A switchover names every page of guests up to 128 GiB in its bitmap.
inline constexpr uint64_t kMaxPostcopyPages = 32ull << 20;
inline constexpr uint32_t kMaxVmState = 8u << 20;
inline constexpr uint32_t kMaxPostcopyStatePayload =
    4 + 8 * kMaxStreams + 8 + static_cast<uint32_t>(kMaxPostcopyPages / 8) + 4 + kMaxVmState;

// kPostcopyState (src -> dst, control): sent while the source is paused, instead of the
// stop-and-copy's last pages and kState.
struct PostcopyStateMsg {
  std::vector<uint64_t> stream_frames;  // frames each data stream carried before the switchover
  Bitmap outstanding;                   // pages the destination must not trust: they follow
  std::vector<uint8_t> vm_state;        // hypervisor::EncodeVmState
};
std::vector<uint8_t> EncodePostcopyState(const PostcopyStateMsg& m);
// `mem_pages`: the announced VM's pages; the bitmap must name exactly that many.
Result<PostcopyStateMsg> DecodePostcopyState(std::span<const uint8_t> p, uint32_t streams, uint64_t mem_pages);

// kPostcopyComplete (dst -> src, control): every page is here; what it took.
struct PostcopyComplete {
  uint64_t faults = 0;         // first touches served on demand
  uint64_t fetched_pages = 0;  // pages fetched on demand (faulting pages and their windows)
  uint64_t placed_pages = 0;   // pages placed from the background stream
  uint32_t fault_p50_us = 0, fault_p99_us = 0, fault_max_us = 0;
  uint64_t held_frames = 0;    // network frames the guest sent while the output was held
  uint64_t held_disk_bytes = 0;  // disk bytes written while the disk was held
};
std::vector<uint8_t> EncodePostcopyComplete(const PostcopyComplete& m);
Result<PostcopyComplete> DecodePostcopyComplete(std::span<const uint8_t> p);
inline constexpr uint32_t kPostcopyCompletePayload = 8 * 3 + 4 * 3 + 8 * 2;

}  // namespace ferry::migrate
