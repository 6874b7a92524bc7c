#include "page_sink.h"

#include <cstring>

#include "stream_set.h"

namespace ferry::migrate {
namespace {
alignas(64) const uint8_t kZeroPage[kPageBytes] = {};
}

PageSink::PageSink(hypervisor::GuestMemory& memory, uint32_t stream, uint32_t streams)
    : memory_(memory), stream_(stream), streams_(streams), scratch_(size_t(kMaxPagesPerBatch) * kPageBytes) {}

Status PageSink::Flush() {
  if (run_.empty()) return Status::Ok();
  Status st = memory_.WriteVThroughFd(run_first_ * kPageBytes, run_);
  run_.clear();
  return st;
}

Result<uint64_t> PageSink::Apply(std::span<const uint8_t> payload) {
  const uint64_t mem_pages = memory_.size() / kPageBytes;
  uint32_t used = 0;  // scratch pages used by this batch
  uint64_t applied = 0;
  run_.clear();
  Status st = DecodePageBatch(payload, mem_pages, [&](const PageRecord& r) -> Status {
    if ((r.page / kBlockPages) % streams_ != stream_) {
      return Corrupt("page " + std::to_string(r.page) + " arrived on the wrong stream");
    }
    std::span<const uint8_t> page;
    uint8_t* slot = &scratch_[size_t(used) * kPageBytes];
    switch (r.encoding) {
      case PageEncoding::kZero: page = {kZeroPage, kPageBytes}; break;
      case PageEncoding::kRaw: page = r.data; break;
      case PageEncoding::kZstd:
        FERRY_RETURN_IF_ERROR(decoder_.Zstd(r.data, slot));
        page = {slot, kPageBytes};
        ++used;
        break;
      case PageEncoding::kXbzrle:
        // The delta applies to the page as last sent, which is what guest memory holds now:
        // a batch names each page at most once, so no earlier record of it is still pending.
        FERRY_RETURN_IF_ERROR(memory_.Read(r.page * kPageBytes, slot, kPageBytes));
        FERRY_RETURN_IF_ERROR(XbzrleDecode(r.data, slot).Annotate("page " + std::to_string(r.page)));
        page = {slot, kPageBytes};
        ++used;
        break;
    }
    if (run_.empty() || r.page != run_first_ + run_.size()) {
      FERRY_RETURN_IF_ERROR(Flush());
      run_first_ = r.page;
    }
    run_.push_back(page);
    ++applied;
    return Status::Ok();
  });
  if (st.ok()) st = Flush();
  if (!st.ok()) return st;
  return applied;
}

}  // namespace ferry::migrate
