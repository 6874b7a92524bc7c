// StreamSet: the source's data streams. Sends a set of guest pages over N channels in
// parallel, one thread per stream, each with its own PageEncoder: stream i carries the 1 MiB
// blocks b with b % N == i, so a page always travels on the same stream and a newer copy can
// never overtake an older one. Remembers each page's last-sent XXH3 to skip unchanged pages,
// and hashes a resent page only while that pays on its stream (a SampledCostModel: a
// replication epoch of rewritten pages spends no pass on hashes that never match).
// Used by Migrate() from one thread; internally parallel.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "ferry/base/bitmap.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/channel.h"
#include "ferry/migrate/page_codec.h"

namespace ferry::migrate {

class StreamSet {
 public:
  StreamSet(const hypervisor::GuestMemory& memory, std::vector<std::unique_ptr<Channel>> channels,
            const EncoderOptions& options);
  // Sends every page set in `pages`; the first error stops every stream. Page p is read at
  // `source + p * kPageBytes` (null: guest memory itself; replication passes its staging
  // copy, laid out like guest memory).
  Status SendRound(const Bitmap& pages, const uint8_t* source = nullptr);
  // Post-copy switchover: the destination dropped `outstanding` (or never had it), so those
  // pages are sent whole from now on (zero, zstd or raw: never unchanged, never a delta).
  void BeginPostcopy(const Bitmap& outstanding);
  // Replication: ends epoch `epoch` on every stream (kEpochEnd with the pages sent since the
  // previous epoch end); returns the frames each stream carried so far, the end included.
  Result<std::vector<uint64_t>> EndEpoch(uint64_t epoch);
  // Ends every stream (kStreamEnd); returns the frames each carried, the end included.
  Result<std::vector<uint64_t>> Finish();
  void CloseAll();
  // Tells the destination why on every stream (in order, after any complete batch), then
  // closes them.
  void FailAll(const std::string& reason);

  uint64_t wire_bytes() const;
  // Every stream's sends wait on `limiter` (null: none) from now on; call between rounds.
  void SetLimiter(RateLimiter* limiter);
  std::vector<uint64_t> frames_sent() const;
  // Between rounds: resent pages skipped as unchanged, and resent pages hashed to look for
  // that (the rest went without looking).
  uint64_t pages_unchanged() const;
  uint64_t unchanged_tries() const;
  EncoderCounts counts() const;
  size_t size() const { return channels_.size(); }
  // 1 in 2^this of a stream's resent pages is always hashed (the unchanged check's sample).
  static constexpr unsigned kDedupeSampleLog2 = 4;

 private:
  Status SendStream(size_t stream, const Bitmap& pages, const uint8_t* source);

  const hypervisor::GuestMemory& memory_;
  std::vector<std::unique_ptr<Channel>> channels_;
  std::vector<std::unique_ptr<PageEncoder>> encoders_;  // one per stream
  std::vector<uint64_t> pages_sent_;                     // per stream, for kStreamEnd
  std::vector<uint64_t> epoch_start_;                    // per stream: pages_sent_ at the last epoch end
  // Last-sent XXH3 of each page, made odd (0: never sent; kSentUnhashed: sent without
  // hashing, so never taken for unchanged). Each page belongs to one stream, so each element
  // is touched by one thread only.
  static constexpr uint64_t kSentUnhashed = 2;
  std::vector<uint64_t> sent_hash_;
  std::vector<SampledCostModel> dedupe_;  // per stream: whether hashing resent pages pays
  std::vector<uint64_t> unchanged_, unchanged_tries_;  // per stream, like pages_sent_
  std::atomic<bool> failed_{false};
};

}  // namespace ferry::migrate
