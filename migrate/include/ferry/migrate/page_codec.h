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

class PageEncoder {
 public:
  explicit PageEncoder(const EncoderOptions& options);
  ~PageEncoder();
  PageEncoder(const PageEncoder&) = delete;
  PageEncoder& operator=(const PageEncoder&) = delete;

  // Appends `page` (a stable copy of guest page `index`) to `batch` in the cheapest encoding
  // that pays. `resend`: the page was sent before (delta candidates, and worth caching).
  void Encode(uint64_t index, const uint8_t* page, bool resend, BatchBuilder* batch);
  const EncoderCounts& counts() const { return counts_; }

 private:
  bool TryXbzrle(uint64_t index, const uint8_t* page, BatchBuilder* batch);
  bool TryZstd(uint64_t index, const uint8_t* page, BatchBuilder* batch);
  void Remember(uint64_t index, const uint8_t* page);

  EncoderOptions options_;
  ZSTD_CCtx_s* cctx_ = nullptr;
  EncoderCounts counts_;
  // Adaptive zstd: after a window of attempts that mostly did not pay, skip attempts for a
  // while, then probe again. Random data costs compression CPU and gains nothing.
  uint32_t zstd_window_tries_ = 0, zstd_window_wins_ = 0, zstd_skip_ = 0;
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
