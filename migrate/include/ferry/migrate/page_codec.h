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
};

struct EncoderCounts {
  uint64_t zero = 0, raw = 0, zstd = 0, xbzrle = 0;
  uint64_t zstd_tries = 0, xbzrle_tries = 0;
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

 private:
  // Each returns the encoded length in scratch_ (0: did not pay or not tried).
  size_t TryXbzrle(uint64_t index, const uint8_t* page);
  size_t TryZstd(const uint8_t* page);
  void Remember(uint64_t index, const uint8_t* page);

  EncoderOptions options_;
  ZSTD_CCtx_s* cctx_ = nullptr;
  EncoderCounts counts_;
  // Random data costs compression and delta CPU and gains nothing: each pays its way.
  EncoderCostModel zstd_model_, xbzrle_model_;
  // Direct-mapped cache of last-sent copies: slot = index % slots, tag = index + 1.
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
