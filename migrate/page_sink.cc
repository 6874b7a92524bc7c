#include "ferry/migrate/page_sink.h"

#include <cstring>

#include "ferry/migrate/postcopy_memory.h"
#include "ferry/migrate/stream_set.h"

namespace ferry::migrate {
namespace {
alignas(64) const uint8_t kZeroPage[kPageBytes] = {};
}

PageSink::PageSink(hypervisor::GuestMemory& memory, uint32_t stream, uint32_t streams)
    : memory_(memory), stream_(stream), streams_(streams), scratch_(size_t(kMaxPagesPerBatch) * kPageBytes) {}

Status ApplyStaged(hypervisor::GuestMemory& memory, const StagedPages& staged) {
  std::vector<std::span<const uint8_t>> run;
  uint64_t first = 0;
  for (size_t i = 0; i <= staged.index.size(); ++i) {
    bool extends = i < staged.index.size() && !run.empty() && staged.index[i] == first + run.size();
    if (!run.empty() && !extends) {
      FERRY_RETURN_IF_ERROR(memory.WriteVThroughFd(first * kPageBytes, run));
      run.clear();
    }
    if (i == staged.index.size()) break;
    if (run.empty()) first = staged.index[i];
    run.push_back({&staged.data[i * kPageBytes], kPageBytes});
  }
  return Status::Ok();
}

Status PageSink::Flush() {
  if (run_.empty()) return Status::Ok();
  if (postcopy_) {
    for (size_t i = 0; i < run_.size(); ++i) {
      Status st = postcopy_->Place(run_first_ + i, run_[i].data());
      if (!st.ok()) {
        run_.clear();
        return st;
      }
    }
    run_.clear();
    return Status::Ok();
  }
  if (staged_) {
    for (size_t i = 0; i < run_.size(); ++i) {
      staged_->index.push_back(run_first_ + i);
      staged_->data.insert(staged_->data.end(), run_[i].begin(), run_[i].end());
    }
    run_.clear();
    return Status::Ok();
  }
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
        if (postcopy_) return Corrupt("page " + std::to_string(r.page) + " arrived as a delta after the post-copy switchover");
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
