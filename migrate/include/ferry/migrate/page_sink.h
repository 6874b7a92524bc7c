// PageSink: lands one data stream's page batches in the destination's guest memory. Decodes
// each record (zero, raw, zstd, XBZRLE against the page's current contents), checks that the
// page belongs to this stream, and writes runs of consecutive pages with one pwritev through
// the memfd (no page fault per 4 KiB in our mapping). One per receiving thread.
#pragma once

#include <vector>

#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/page_codec.h"
#include "ferry/migrate/protocol.h"

namespace ferry::migrate {

// Decoded pages held back from guest memory until their checkpoint is complete (a
// replication standby), in arrival order; each page at most once per checkpoint.
struct StagedPages {
  // Capacity kept across checkpoints for reuse; one unusually large checkpoint does not pin
  // its size for the life of the standby (on top of the replica itself).
  static constexpr size_t kKeptBytes = 64u << 20;
  std::vector<uint64_t> index;
  std::vector<uint8_t> data;  // index.size() pages
  void Clear() {
    if (data.capacity() > kKeptBytes) {
      std::vector<uint8_t>().swap(data);
      std::vector<uint64_t>().swap(index);
    }
    index.clear();
    data.clear();
  }
};
// Writes staged pages into guest memory (runs of consecutive pages in one pwritev each).
Status ApplyStaged(hypervisor::GuestMemory& memory, const StagedPages& staged);

class PostcopyMemory;

class PageSink {
 public:
  PageSink(hypervisor::GuestMemory& memory, uint32_t stream, uint32_t streams);
  // Non-null: decoded pages go to `staged` instead of guest memory (XBZRLE deltas still
  // apply to guest memory's copy, the last committed one).
  void set_staging(StagedPages* staged) { staged_ = staged; }
  // Non-null: post-copy has begun. Pages are placed through userfaultfd (once each: a page
  // the guest already faulted in is never overwritten), and a delta (XBZRLE), which would
  // need the discarded old copy, is refused.
  void set_postcopy(PostcopyMemory* memory) { postcopy_ = memory; }
  // Validates and applies a kPages payload; returns the pages applied.
  Result<uint64_t> Apply(std::span<const uint8_t> payload);

 private:
  Status Flush();

  hypervisor::GuestMemory& memory_;
  const uint32_t stream_, streams_;
  PageDecoder decoder_;
  std::vector<uint8_t> scratch_;                  // decoded pages of the current batch
  std::vector<std::span<const uint8_t>> run_;     // the current run of consecutive pages
  uint64_t run_first_ = 0;
  StagedPages* staged_ = nullptr;
  PostcopyMemory* postcopy_ = nullptr;
};

}  // namespace ferry::migrate
