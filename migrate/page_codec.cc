#include "ferry/migrate/page_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "ferry/base/coding.h"

namespace ferry::migrate {
namespace {

// A delta or a compressed page must save at least 1/8 of a page to be worth its CPU.
constexpr size_t kPayCap = kPageBytes - kPageBytes / 8;

size_t PutUleb(uint8_t* out, size_t pos, size_t cap, uint32_t v) {
  do {
    if (pos >= cap) return 0;
    uint8_t b = v & 0x7f;
    v >>= 7;
    out[pos++] = b | (v ? 0x80 : 0);
  } while (v);
  return pos;
}

bool GetUleb(std::span<const uint8_t> in, size_t* pos, uint32_t* v) {
  *v = 0;
  for (int shift = 0; shift < 21; shift += 7) {  // values never exceed a page
    if (*pos >= in.size()) return false;
    uint8_t b = in[(*pos)++];
    *v |= uint32_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

}  // namespace

bool IsZeroPage(const uint8_t* page) {
  uint64_t acc = 0;
  for (uint32_t i = 0; i < kPageBytes; i += 64) {
    uint64_t w[8];
    std::memcpy(w, page + i, 64);
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc) return false;
  }
  return true;
}

size_t XbzrleEncode(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap) {
  // Every differing byte goes out as a literal byte, so more of them than fit says no at once:
  // one pass of word compares (a rewritten random page: ~0.3 us), not the byte-wise run scan
  // below until the literal overflows (~5 us, 40% of a checkpoint's sending thread when the
  // cost model's sample tries every 16th page).
  constexpr uint64_t k7f = 0x7f7f7f7f7f7f7f7full, kOnes = 0x0101010101010101ull;
  size_t differing = 0;
  for (size_t w = 0; w < kPageBytes; w += 8) {
    const uint64_t x = LoadLe64(old_page + w) ^ LoadLe64(new_page + w);
    const uint64_t nonzero = ((((x & k7f) + k7f) | x) & ~k7f) >> 7;  // 1 in each nonzero byte
    differing += (nonzero * kOnes) >> 56;
  }
  if (differing > cap) return 0;
  size_t pos = 0, i = 0;
  while (i < kPageBytes) {
    size_t same = i;
    // Skip equal words, then equal bytes.
    while (same + 8 <= kPageBytes && LoadLe64(old_page + same) == LoadLe64(new_page + same)) same += 8;
    while (same < kPageBytes && old_page[same] == new_page[same]) ++same;
    if (same == kPageBytes) break;  // the rest is unchanged: nothing more to say
    size_t diff = same;
    // A literal run ends at the first 8 equal bytes (shorter equal gaps cost more as runs).
    while (diff < kPageBytes) {
      if (diff + 8 <= kPageBytes && LoadLe64(old_page + diff) == LoadLe64(new_page + diff)) break;
      // The literal alone no longer fits: say so now, not after scanning the whole page.
      if (++diff - same > cap - pos) return 0;
    }
    pos = PutUleb(out, pos, cap, static_cast<uint32_t>(same - i));
    if (!pos) return 0;
    pos = PutUleb(out, pos, cap, static_cast<uint32_t>(diff - same));
    if (!pos || cap - pos < diff - same) return 0;
    std::memcpy(out + pos, new_page + same, diff - same);
    pos += diff - same;
    i = diff;
  }
  return pos == 0 ? PutUleb(out, 0, cap, 0) : pos;  // an unchanged page still needs a record
}

Status XbzrleDecode(std::span<const uint8_t> delta, uint8_t* page) {
  size_t pos = 0, at = 0;
  while (pos < delta.size()) {
    uint32_t skip = 0, lit = 0;
    if (!GetUleb(delta, &pos, &skip)) return Corrupt("xbzrle: truncated run length");
    if (pos == delta.size() && skip == 0 && at == 0) return Status::Ok();  // "unchanged" record
    if (!GetUleb(delta, &pos, &lit)) return Corrupt("xbzrle: truncated literal length");
    if (skip > kPageBytes - at || lit > kPageBytes - at - skip) return Corrupt("xbzrle: run past the end of the page");
    if (lit > delta.size() - pos) return Corrupt("xbzrle: truncated literal");
    at += skip;
    std::memcpy(page + at, delta.data() + pos, lit);
    at += lit;
    pos += lit;
  }
  return Status::Ok();
}

PageEncoder::PageEncoder(const EncoderOptions& options) : options_(options), scratch_(kPageBytes) {
  if (options_.compress) cctx_ = ZSTD_createCCtx();
  if (options_.xbzrle_cache_pages) {
    cache_tags_.assign(options_.xbzrle_cache_pages, 0);
    cache_data_.resize(options_.xbzrle_cache_pages * kPageBytes);
  }
}

PageEncoder::~PageEncoder() { ZSTD_freeCCtx(cctx_); }

void EncoderCostModel::Record(bool paid) {
  wins_ += paid;
  if (++tries_ < kWindow) return;
  if (wins_ < kWindow / 8) {
    skip_ = backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  } else {
    backoff_ = kMinBackoff;
  }
  tries_ = wins_ = 0;
}

void SampledCostModel::Record(uint64_t page, bool paid) {
  if (!Sampled(page)) return;
  wins_ += paid;
  if (++tries_ < kWindow) return;
  on_ = wins_ >= kWindow / 8;
  tries_ = wins_ = 0;
}

void PageEncoder::Encode(uint64_t index, const uint8_t* page, bool resend, BatchBuilder* batch) {
  uint8_t* slot = batch->Reserve(index, PageEncoding::kRaw, kPageBytes);
  std::memcpy(slot, page, kPageBytes);
  EncodeReserved(index, slot, resend, batch);
}

void PageEncoder::EncodeReserved(uint64_t index, const uint8_t* page, bool resend, BatchBuilder* batch) {
  // `page` lives in the reserved record: cache it before a smaller encoding overwrites it.
  if (IsZeroPage(page)) {
    // The receiver holds zeros now: a later delta must be taken against them, not against an
    // older copy in the cache (found by the sender-vs-receiver fuzzer).
    if (resend) KeepOrForget(index, page);
    batch->Reserve(index, PageEncoding::kZero, 0);
    batch->Commit(0);
    ++counts_.zero;
    return;
  }
  PageEncoding encoding = PageEncoding::kXbzrle;
  size_t len = resend ? TryXbzrle(index, page) : 0;
  if (len == 0) {
    encoding = PageEncoding::kZstd;
    len = TryZstd(page);
  }
  // Only pages that come back are worth a cache slot: the bulk of round 0 would just evict.
  if (resend) KeepOrForget(index, page);
  if (len == 0) {
    batch->Commit(kPageBytes);  // the reserved raw record as it is
    ++counts_.raw;
    counts_.encoded_bytes += kPageBytes;
    return;
  }
  std::memcpy(batch->Reserve(index, encoding, static_cast<uint32_t>(len)), scratch_.data(), len);
  batch->Commit(static_cast<uint32_t>(len));
  ++(encoding == PageEncoding::kZstd ? counts_.zstd : counts_.xbzrle);
  counts_.encoded_bytes += len;
}

size_t PageEncoder::TryXbzrle(uint64_t index, const uint8_t* page) {
  if (cache_tags_.empty()) return 0;
  size_t slot = Slot(index);
  if (cache_tags_[slot] != index + 1) return 0;
  // A sampled page is always tried: its outcome decides whether caching pays at all.
  const bool sampled = cache_model_.Sampled(index);
  if (!sampled && !xbzrle_model_.ShouldTry()) return 0;
  ++counts_.xbzrle_tries;
  size_t len = XbzrleEncode(&cache_data_[slot * kPageBytes], page, scratch_.data(), kPayCap);
  if (sampled) {
    cache_model_.Record(index, len != 0);
  } else {
    xbzrle_model_.Record(len != 0);
  }
  return len;
}

size_t PageEncoder::TryZstd(const uint8_t* page) {
  if (!cctx_ || !zstd_model_.ShouldTry()) return 0;
  ++counts_.zstd_tries;
  size_t len = ZSTD_compressCCtx(cctx_, scratch_.data(), kPayCap, page, kPageBytes, options_.zstd_level);
  bool paid = !ZSTD_isError(len) && len < kPayCap;
  zstd_model_.Record(paid);
  return paid ? len : 0;
}

void PageEncoder::Remember(uint64_t index, const uint8_t* page) {
  if (cache_tags_.empty()) return;
  size_t slot = Slot(index);
  cache_tags_[slot] = index + 1;
  std::memcpy(&cache_data_[slot * kPageBytes], page, kPageBytes);
}

size_t PageEncoder::Slot(uint64_t index) const {
  // Numbered densely among this stream's pages (every streams-th block), so each slot serves
  // as many pages: index % slots alone used 1/streams of the slots (whole blocks never mapped).
  const uint64_t streams = std::max<uint32_t>(1, options_.streams);
  const uint64_t local = index / (kBlockPages * streams) * kBlockPages + index % kBlockPages;
  return local % cache_tags_.size();
}

void PageEncoder::Forget(uint64_t index) {
  if (cache_tags_.empty()) return;
  size_t slot = Slot(index);
  if (cache_tags_[slot] == index + 1) cache_tags_[slot] = 0;
}

void PageEncoder::KeepOrForget(uint64_t index, const uint8_t* page) {
  if (cache_tags_.empty()) return;
  if (!cache_model_.ShouldKeep(index)) {
    Forget(index);
    return;
  }
  Remember(index, page);
  ++counts_.cached;
}

PageDecoder::PageDecoder() : dctx_(ZSTD_createDCtx()) {}
PageDecoder::~PageDecoder() { ZSTD_freeDCtx(dctx_); }

Status PageDecoder::Zstd(std::span<const uint8_t> data, uint8_t* page) {
  size_t n = ZSTD_decompressDCtx(dctx_, page, kPageBytes, data.data(), data.size());
  if (ZSTD_isError(n)) return Corrupt(std::string("zstd page: ") + ZSTD_getErrorName(n));
  if (n != kPageBytes) return Corrupt("zstd page decompressed to " + std::to_string(n) + " bytes");
  return Status::Ok();
}

}  // namespace ferry::migrate
