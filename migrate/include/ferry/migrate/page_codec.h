// Page encoders (DESIGN.md, cheapest first): zero page, unchanged since last sent (XXH3, the
// sender skips it), XBZRLE-style delta against the last sent copy, zstd, raw.
//
// PageEncoder is one stream's encoder: it owns a zstd context, its share of the bounded
// XBZRLE cache and the running statistics that decide whether compression pays. Not
// thread-safe: one per stream thread. PageDecoder is the receiving side's counterpart.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/migrate/protocol.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace ferry::migrate {

bool IsZeroPage(const uint8_t* page);

// XBZRLE: runs of (ULEB128 unchanged-byte count, ULEB128 literal count, literal bytes) that
// turn `old_page` into `new_page`. Returns the encoded length, or 0 if it would exceed `cap`.
size_t XbzrleEncode(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap);
// Applies a delta to `page` in place; every run is bounds-checked against the page.
Status XbzrleDecode(std::span<const uint8_t> delta, uint8_t* page);

struct EncoderOptions {
  bool compress = true;            // try zstd
  int zstd_level = 1;
  uint64_t xbzrle_cache_pages = 0; // this encoder's share of the cache (0: no XBZRLE)
  uint32_t streams = 1;            // the encoder sees only its stream's blocks (kBlockPages)
};

struct EncoderCounts {
  uint64_t zero = 0, raw = 0, zstd = 0, xbzrle = 0;
  uint64_t zstd_tries = 0, xbzrle_tries = 0;
  uint64_t cached = 0;         // resent pages copied into the XBZRLE cache
  uint64_t encoded_bytes = 0;  // payload bytes produced (without record headers)
};

// Whether an optional encoder (zstd, XBZRLE) has paid lately on one stream's pages, so its
// CPU goes only where it saves bytes. Every page is tried while it pays; after a window of
// tries in which fewer than 1/8 paid, the next `backoff` pages skip it and a new window
// probes again. Each window that still does not pay doubles the backoff (256 to 4096 pages);
// one that pays resets it, so the encoder comes back within 4096 pages once data compresses.
class EncoderCostModel {
 public:
  static constexpr uint32_t kWindow = 16;
  static constexpr uint32_t kMinBackoff = 256, kMaxBackoff = 4096;
  // Call once per candidate page; false: skip the encoder for this one (counted).
  bool ShouldTry() {
    if (skip_ == 0) return true;
    --skip_;
    return false;
  }
  // The outcome of a try that ShouldTry() allowed.
  void Record(bool paid);
  uint32_t backoff() const { return backoff_; }

 private:
  uint32_t tries_ = 0, wins_ = 0;  // the current window
  uint32_t skip_ = 0;              // pages left to skip
  uint32_t backoff_ = kMinBackoff;
};

// Whether a check that needs state kept from a page's previous send (its hash, to find it
// unchanged; its cached copy, for a delta) pays on one stream. Keeping that state costs a
// pass over every page, so it is kept for every page only while it pays. A fixed sample of
// pages (1 in 2^log2, by a hash of the index) always keeps it, so the sample's outcomes are
// always informative: in each window of 16 sampled checks, at least 1/8 that paid turns (or
// keeps) the check on for every page; fewer turn it off for all but the sample. A page whose
// state was not kept is simply sent without the check (never wrongly taken as unchanged or
// deltaed).
class SampledCostModel {
 public:
  static constexpr uint32_t kWindow = 16;
  explicit SampledCostModel(unsigned one_in_log2 = 4) : shift_(64 - one_in_log2) {}
  bool Sampled(uint64_t page) const { return (page * 0x9e3779b97f4a7c15ull) >> shift_ == 0; }
  bool ShouldKeep(uint64_t page) const { return on_ || Sampled(page); }
  // The outcome of a check on `page` (counted only for sampled pages).
  void Record(uint64_t page, bool paid);
  bool on() const { return on_; }

 private:
  unsigned shift_;
  bool on_ = true;
  uint32_t tries_ = 0, wins_ = 0;
};

class PageEncoder {
 public:
  explicit PageEncoder(const EncoderOptions& options);
  ~PageEncoder();
  PageEncoder(const PageEncoder&) = delete;
  PageEncoder& operator=(const PageEncoder&) = delete;

  // Appends `page` (a stable copy of guest page `index`) to `batch` in the cheapest encoding
  // that pays. `resend`: the page was sent before (delta candidates, and worth caching).
  void Encode(uint64_t index, const uint8_t* page, bool resend, BatchBuilder* batch);
  // The same for a page already copied into `batch`: `page` is the kRaw record just reserved
  // for `index` (not committed), holding the stable copy. Saves the copy from a staging
  // buffer into the batch (copy once): the record stays raw, or is rewritten smaller.
  void EncodeReserved(uint64_t index, const uint8_t* page, bool resend, BatchBuilder* batch);
  const EncoderCounts& counts() const { return counts_; }
  // 1 in 2^this of a stream's resent pages is always cached and tried as a delta: a try costs
  // a cold read of the cached copy, so the sample is sparser than the unchanged check's.
  static constexpr unsigned kCacheSampleLog2 = 6;

 private:
  // Each returns the encoded length in scratch_ (0: did not pay or not tried).
  size_t TryXbzrle(uint64_t index, const uint8_t* page);
  size_t TryZstd(const uint8_t* page);
  void Remember(uint64_t index, const uint8_t* page);
  // `index` leaves the cache (its last-sent copy was not kept): no delta against a stale one.
  void Forget(uint64_t index);
  // Caches a resent page when the cache model keeps state for it, else forgets it.
  void KeepOrForget(uint64_t index, const uint8_t* page);

  EncoderOptions options_;
  ZSTD_CCtx_s* cctx_ = nullptr;
  EncoderCounts counts_;
  // Random data costs compression and delta CPU and gains nothing: each pays its way.
  EncoderCostModel zstd_model_, xbzrle_model_;
  // And the cache copy a delta needs, a pass over every resent page, pays its way too.
  SampledCostModel cache_model_{kCacheSampleLog2};
  // Direct-mapped cache of last-sent copies: slot = Slot(index), tag = index + 1.
  size_t Slot(uint64_t index) const;
  std::vector<uint64_t> cache_tags_;
  std::vector<uint8_t> cache_data_;
  std::vector<uint8_t> scratch_;
};

class PageDecoder {
 public:
  PageDecoder();
  ~PageDecoder();
  PageDecoder(const PageDecoder&) = delete;
  PageDecoder& operator=(const PageDecoder&) = delete;
  // Decompresses a zstd page; it must produce exactly one page.
  Status Zstd(std::span<const uint8_t> data, uint8_t* page);

 private:
  ZSTD_DCtx_s* dctx_ = nullptr;
};

}  // namespace ferry::migrate
