// Page encoders: zero detection, XBZRLE deltas (round trips over seeded random edits and
// refusal of malformed deltas), and PageEncoder's choice of encoding, each record decoded back
// the way the receiver does it.
#include "ferry/migrate/page_codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "fuzz_seed.h"

namespace ferry::migrate {
namespace {

using Page = std::vector<uint8_t>;

Page RandomPage(std::mt19937& rng) {
  Page p(kPageBytes);
  for (auto& b : p) b = static_cast<uint8_t>(rng());
  return p;
}

Page TextPage(const std::string& text = "the quick brown fox jumps over the lazy dog; ") {
  Page p(kPageBytes);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(text[i % text.size()]);
  return p;
}

TEST(IsZeroPageTest, OnlyAnAllZeroPageIsZero) {
  Page p(kPageBytes, 0);
  EXPECT_TRUE(IsZeroPage(p.data()));
  for (uint32_t off = 0; off < kPageBytes; ++off) {
    p[off] = 1;
    EXPECT_FALSE(IsZeroPage(p.data())) << "a byte set at offset " << off;
    p[off] = 0;
  }
  p[kPageBytes - 1] = 0x80;
  EXPECT_FALSE(IsZeroPage(p.data()));
}

// Encodes with a generous cap and checks that the delta turns `old_page` into `new_page`.
size_t ExpectDeltaRoundTrips(const Page& old_page, const Page& new_page, const std::string& what) {
  std::vector<uint8_t> delta(2 * kPageBytes);
  size_t len = XbzrleEncode(old_page.data(), new_page.data(), delta.data(), delta.size());
  EXPECT_GT(len, 0u) << what;
  Page out = old_page;
  Status st = XbzrleDecode(std::span<const uint8_t>(delta.data(), len), out.data());
  EXPECT_TRUE(st.ok()) << what << ": " << st.message();
  EXPECT_TRUE(out == new_page) << what;
  return len;
}

TEST(XbzrleTest, UnchangedPageIsOneByteAndDecodesToItself) {
  std::mt19937 rng(1);
  Page p = RandomPage(rng);
  uint8_t out[16];
  EXPECT_EQ(XbzrleEncode(p.data(), p.data(), out, sizeof out), 1u);
  Page copy = p;
  ASSERT_TRUE(XbzrleDecode({out, 1}, copy.data()).ok());
  EXPECT_EQ(copy, p);
}

TEST(XbzrleTest, RoundTripsRandomSparseEdits) {
  std::mt19937 rng(20240601);
  for (int iter = 0; iter < 2000; ++iter) {
    Page old_page = (iter % 3 == 0) ? Page(kPageBytes, 0) : RandomPage(rng);
    Page new_page = old_page;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      size_t run = (rng() % 4 == 0) ? 1 + rng() % 200 : 1;  // single bytes and runs
      size_t at;
      switch (rng() % 4) {
        case 0: at = 0; break;                  // the page's first byte
        case 1: at = kPageBytes - run; break;   // ending at the last byte
        default: at = rng() % (kPageBytes - run + 1);
      }
      for (size_t i = 0; i < run; ++i) new_page[at + i] = static_cast<uint8_t>(new_page[at + i] + 1 + rng() % 255);
    }
    ExpectDeltaRoundTrips(old_page, new_page, "iteration " + std::to_string(iter));
    if (HasFailure()) return;
  }
}

TEST(XbzrleTest, RoundTripsEditsAtThePageEdges) {
  std::mt19937 rng(2);
  Page old_page = RandomPage(rng);
  for (size_t at : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{kPageBytes - 9}, size_t{kPageBytes - 8},
                    size_t{kPageBytes - 7}, size_t{kPageBytes - 1}}) {
    Page new_page = old_page;
    new_page[at] ^= 0xff;
    size_t len = ExpectDeltaRoundTrips(old_page, new_page, "one byte at " + std::to_string(at));
    // Two bytes of skip, one of count, the byte itself; near the end the literal runs on to
    // the page end (fewer than 8 bytes are left to prove a gap).
    EXPECT_LE(len, at + 8 >= kPageBytes ? 3 + (kPageBytes - at) : 4u) << "one byte at " << at;
  }
  // Everything changed: one literal run of the whole page.
  Page inverted = old_page;
  for (auto& b : inverted) b = static_cast<uint8_t>(~b);
  EXPECT_GT(ExpectDeltaRoundTrips(old_page, inverted, "whole page"), kPageBytes);
}

TEST(XbzrleTest, ReturnsZeroWhenTheDeltaExceedsTheCapAndNeverWritesPastIt) {
  std::mt19937 rng(3);
  Page old_page = RandomPage(rng);
  EXPECT_EQ(XbzrleEncode(old_page.data(), RandomPage(rng).data(), std::vector<uint8_t>(3584).data(), 3584), 0u);

  Page new_page = old_page;
  for (size_t i = 100; i < 1100; i += 3) new_page[i] ^= 0x55;  // ~333 edits, gaps too short to skip
  std::vector<uint8_t> big(2 * kPageBytes);
  size_t need = XbzrleEncode(old_page.data(), new_page.data(), big.data(), big.size());
  ASSERT_GT(need, 0u);
  for (size_t cap : {need, need - 1, need / 2, size_t{1}, size_t{0}}) {
    std::vector<uint8_t> out(cap + 64, 0xcc);
    size_t len = XbzrleEncode(old_page.data(), new_page.data(), out.data(), cap);
    EXPECT_EQ(len, cap == need ? need : 0) << "cap " << cap;
    for (size_t i = cap; i < out.size(); ++i) {
      ASSERT_EQ(out[i], 0xcc) << "wrote byte " << i << " past a cap of " << cap;
    }
    if (len) {
      EXPECT_EQ(0, std::memcmp(out.data(), big.data(), len));
    }
  }
}

Status Decode(std::vector<uint8_t> delta) {
  Page p(kPageBytes, 0);
  return XbzrleDecode(delta, p.data());
}

TEST(XbzrleTest, DecodeRefusesRunsPastThePageEnd) {
  EXPECT_TRUE(Decode({0x80, 0x20, 0x00}).ok()) << "skip 4096, no literal: the page unchanged";
  EXPECT_FALSE(Decode({0x81, 0x20, 0x00}).ok()) << "skip 4097";
  EXPECT_FALSE(Decode({0x80, 0x20, 0x01, 0xaa}).ok()) << "skip 4096 then a literal byte";
  EXPECT_TRUE(Decode({0xff, 0x1f, 0x01, 0xaa}).ok()) << "skip 4095 then the last byte";
  std::vector<uint8_t> over = {0xf0, 0x1f, 0x11};  // skip 4080, 17 literals: one past the end
  over.resize(over.size() + 17, 0xaa);
  Status st = Decode(over);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("past the end"), std::string::npos) << st.message();
  // Two runs that each fit but together overrun.
  std::vector<uint8_t> two = {0x00, 0x80, 0x10};  // 2048 literals
  two.resize(two.size() + 2048, 1);
  two.insert(two.end(), {0x80, 0x10, 0x01, 0x02});  // skip 2048, 1 literal
  EXPECT_FALSE(Decode(two).ok());
  EXPECT_FALSE(Decode({0xff, 0xff, 0x7f, 0x00}).ok()) << "a 21-bit skip";
}

TEST(XbzrleTest, DecodeRefusesTruncation) {
  Status st = Decode({0x00, 0x05, 1, 2, 3});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("truncated literal"), std::string::npos) << st.message();
  EXPECT_FALSE(Decode({0x80}).ok()) << "truncated skip";
  EXPECT_FALSE(Decode({0x05}).ok()) << "a skip without its literal count";
  EXPECT_FALSE(Decode({0x05, 0x80}).ok()) << "truncated literal count";
  EXPECT_FALSE(Decode({0x80, 0x80, 0x80, 0x01}).ok()) << "a ULEB128 longer than three bytes";
  EXPECT_FALSE(Decode({0x01, 0x01, 0xaa, 0x00}).ok()) << "a trailing half run";
}

TEST(XbzrleTest, TruncationsOfARealDeltaAreRefusedOrStopBetweenRuns) {
  std::mt19937 rng(4);
  Page old_page = RandomPage(rng), new_page = old_page;
  for (size_t i = 0; i < kPageBytes; i += 97) new_page[i] ^= 0x0f;
  std::vector<uint8_t> delta(kPageBytes);
  size_t len = XbzrleEncode(old_page.data(), new_page.data(), delta.data(), delta.size());
  ASSERT_GT(len, 2u);
  size_t refused = 0;
  for (size_t cut = 1; cut < len; ++cut) {
    Page p = old_page;
    Status st = XbzrleDecode(std::span<const uint8_t>(delta.data(), cut), p.data());
    refused += !st.ok();
    // A cut exactly between runs is a shorter valid delta: it applies only the first runs.
    if (st.ok()) {
      EXPECT_NE(p, new_page) << "cut " << cut;
    }
  }
  EXPECT_GT(refused, len / 2);
}

// ---- PageEncoder ----

struct Decoded {
  uint64_t page;
  PageEncoding encoding;
  Page bytes;
};

// Decodes a finished batch the way PageSink does; `base` holds what the receiver has for
// each page (XBZRLE applies to it).
std::vector<Decoded> DecodeBatch(std::span<const uint8_t> payload, const std::map<uint64_t, Page>& base) {
  std::vector<Decoded> out;
  PageDecoder decoder;
  Status st = DecodePageBatch(payload, 1 << 20, [&](const PageRecord& r) -> Status {
    Decoded d{r.page, r.encoding, Page(kPageBytes, 0)};
    switch (r.encoding) {
      case PageEncoding::kZero: break;
      case PageEncoding::kRaw: d.bytes.assign(r.data.begin(), r.data.end()); break;
      case PageEncoding::kZstd: FERRY_RETURN_IF_ERROR(decoder.Zstd(r.data, d.bytes.data())); break;
      case PageEncoding::kXbzrle: {
        auto it = base.find(r.page);
        if (it == base.end()) return Internal("xbzrle for a page the receiver never had");
        d.bytes = it->second;
        FERRY_RETURN_IF_ERROR(XbzrleDecode(r.data, d.bytes.data()));
        break;
      }
    }
    out.push_back(std::move(d));
    return Status::Ok();
  });
  EXPECT_TRUE(st.ok()) << st.message();
  return out;
}

// Encodes one page into its own batch and decodes it back.
Decoded EncodeOne(PageEncoder& enc, uint64_t index, const Page& page, bool resend,
                  const std::map<uint64_t, Page>& base = {}) {
  BatchBuilder b;
  b.Start();
  enc.Encode(index, page.data(), resend, &b);
  auto out = DecodeBatch(b.Finish(), base);
  EXPECT_EQ(out.size(), 1u);
  if (out.size() != 1) return {};
  EXPECT_EQ(out[0].page, index);
  EXPECT_TRUE(out[0].bytes == page) << "page " << index << " did not decode to itself";
  return out[0];
}

TEST(PageEncoderTest, ChoosesZeroZstdAndRaw) {
  PageEncoder enc(EncoderOptions{});
  std::mt19937 rng(5);
  EXPECT_EQ(EncodeOne(enc, 1, Page(kPageBytes, 0), false).encoding, PageEncoding::kZero);
  EXPECT_EQ(EncodeOne(enc, 2, TextPage(), false).encoding, PageEncoding::kZstd);
  EXPECT_EQ(EncodeOne(enc, 3, RandomPage(rng), false).encoding, PageEncoding::kRaw);
  EXPECT_EQ(enc.counts().zero, 1u);
  EXPECT_EQ(enc.counts().zstd, 1u);
  EXPECT_EQ(enc.counts().raw, 1u);
  EXPECT_EQ(enc.counts().zstd_tries, 2u) << "a zero page is never compressed";
  EXPECT_LT(enc.counts().encoded_bytes, kPageBytes + kPageBytes / 8);
}

TEST(PageEncoderTest, WithoutCompressionACompressiblePageGoesRaw) {
  PageEncoder enc(EncoderOptions{.compress = false});
  EXPECT_EQ(EncodeOne(enc, 2, TextPage(), false).encoding, PageEncoding::kRaw);
  EXPECT_EQ(enc.counts().zstd_tries, 0u);
}

TEST(PageEncoderTest, AResentPageWithASmallChangeIsADelta) {
  PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 16});
  std::mt19937 rng(6);
  Page first = RandomPage(rng);
  EXPECT_EQ(EncodeOne(enc, 5, first, true).encoding, PageEncoding::kRaw);
  Page second = first;
  second[0] ^= 1;
  second[2000] ^= 1;
  second[kPageBytes - 1] ^= 1;
  Decoded d = EncodeOne(enc, 5, second, true, {{5, first}});
  EXPECT_EQ(d.encoding, PageEncoding::kXbzrle);
  EXPECT_EQ(enc.counts().xbzrle, 1u);
  // The cache now holds `second`: the next delta applies to it.
  Page third = second;
  third[100] ^= 0xff;
  EXPECT_EQ(EncodeOne(enc, 5, third, true, {{5, second}}).encoding, PageEncoding::kXbzrle);
}

TEST(PageEncoderTest, NoDeltaWithoutACachedCopy) {
  std::mt19937 rng(7);
  Page first = RandomPage(rng), second = first;
  second[10] ^= 1;
  {
    PageEncoder enc(EncoderOptions{});  // no XBZRLE cache
    EncodeOne(enc, 5, first, true);
    EXPECT_EQ(EncodeOne(enc, 5, second, true).encoding, PageEncoding::kRaw);
  }
  {
    // First sent as not-a-resend: not cached, so the next send cannot be a delta.
    PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 16});
    EncodeOne(enc, 5, first, false);
    EXPECT_EQ(EncodeOne(enc, 5, second, true).encoding, PageEncoding::kRaw);
  }
  {
    // Pages 5 and 21 share a slot of a 16-page cache: 21 evicts 5, so 5 must not be a delta
    // against 21's bytes.
    PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 16});
    EncodeOne(enc, 5, first, true);
    Page other = first;
    other[11] ^= 1;
    EncodeOne(enc, 21, other, true);
    EXPECT_EQ(EncodeOne(enc, 5, second, true, {{5, first}}).encoding, PageEncoding::kRaw);
  }
}

TEST(PageEncoderTest, ALargeChangeFallsBackFromDelta) {
  PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 4});
  std::mt19937 rng(8);
  Page first = RandomPage(rng);
  EncodeOne(enc, 1, first, true);
  Page text = TextPage();
  Decoded d = EncodeOne(enc, 1, text, true, {{1, first}});
  EXPECT_EQ(d.encoding, PageEncoding::kZstd);
  EXPECT_EQ(enc.counts().xbzrle_tries, 1u);
  EXPECT_EQ(enc.counts().xbzrle, 0u);
}

TEST(PageEncoderTest, AMixedBatchDecodesPageForPage) {
  PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 64});
  std::mt19937 rng(9);
  std::map<uint64_t, Page> sent;
  BatchBuilder b;
  b.Start();
  for (uint64_t i = 0; i < 64; ++i) {
    Page p = i % 4 == 0 ? Page(kPageBytes, 0) : i % 4 == 1 ? TextPage(std::to_string(i) + " words ") : RandomPage(rng);
    enc.Encode(i, p.data(), true, &b);
    sent[i] = p;
  }
  auto round0 = DecodeBatch(b.Finish(), {});
  ASSERT_EQ(round0.size(), 64u);
  for (auto& d : round0) EXPECT_TRUE(d.bytes == sent[d.page]) << "page " << d.page;

  // Round 1: every page changed a little; the receiver holds round 0.
  std::map<uint64_t, Page> before = sent;
  b.Start();
  for (uint64_t i = 0; i < 64; ++i) {
    Page p = sent[i];
    p[rng() % kPageBytes] ^= 0x11;
    enc.Encode(i, p.data(), true, &b);
    sent[i] = p;
  }
  auto payload = b.Finish();
  EXPECT_LE(payload.size(), kMaxPayload);
  MaybeWriteSeed("encoded-batch", MsgType::kPages, 63, payload);  // 64 guest pages
  auto round1 = DecodeBatch(payload, before);
  ASSERT_EQ(round1.size(), 64u);
  for (auto& d : round1) {
    EXPECT_TRUE(d.bytes == sent[d.page]) << "page " << d.page;
    // Zero pages are not cached, so only the others can be deltas.
    if (d.page % 4 != 0) {
      EXPECT_EQ(d.encoding, PageEncoding::kXbzrle) << "page " << d.page;
    }
  }
}

TEST(PageEncoderTest, ADeltaAfterAZeroPageAppliesToWhatTheReceiverHolds) {
  // Round 1 sends a sparse page (cached as the delta base), round 2 finds it zeroed (the
  // receiver now holds zeros), round 3 finds it refilled much like round 1. A delta against
  // round 1's bytes would be applied to zeros on the receiver and lose them.
  PageEncoder enc(EncoderOptions{.xbzrle_cache_pages = 16});
  std::mt19937 rng(11);
  Page sparse(kPageBytes, 0);
  for (size_t i = 0; i < kPageBytes; i += 64) sparse[i] = static_cast<uint8_t>(1 + rng() % 255);
  EncodeOne(enc, 5, sparse, true);
  Page zero(kPageBytes, 0);
  EXPECT_EQ(EncodeOne(enc, 5, zero, true).encoding, PageEncoding::kZero);
  Page refilled = sparse;
  refilled[100] = 0x77;
  Decoded d = EncodeOne(enc, 5, refilled, true, {{5, zero}});
  EXPECT_TRUE(d.bytes == refilled) << "sent as encoding " << static_cast<int>(d.encoding)
                                   << "; the receiver's page no longer matches the source's";
}

TEST(PageEncoderTest, StopsTryingZstdOnIncompressiblePagesAndProbesAgain) {
  PageEncoder enc(EncoderOptions{});
  std::mt19937 rng(10);
  BatchBuilder b;
  const uint64_t kPages = 2000;
  for (uint64_t i = 0; i < kPages; ++i) {
    b.Start();
    enc.Encode(i, RandomPage(rng).data(), false, &b);
  }
  EXPECT_EQ(enc.counts().raw, kPages);
  EXPECT_LT(enc.counts().zstd_tries, kPages / 4) << "zstd was tried on most random pages";
  EXPECT_GT(enc.counts().zstd_tries, 0u);

  // Once the data compresses again, a later probe finds out and zstd comes back.
  uint64_t zstd_before = enc.counts().zstd;
  for (uint64_t i = 0; i < 3000 && enc.counts().zstd == zstd_before; ++i) {
    b.Start();
    enc.Encode(kPages + i, TextPage().data(), false, &b);
  }
  EXPECT_GT(enc.counts().zstd, zstd_before) << "zstd never came back for compressible pages";
}

TEST(PageEncoderTest, KeepsTryingZstdWhileItPays) {
  PageEncoder enc(EncoderOptions{});
  BatchBuilder b;
  for (uint64_t i = 0; i < 500; ++i) {
    b.Start();
    enc.Encode(i, TextPage(std::to_string(i) + ": ").data(), false, &b);
  }
  EXPECT_EQ(enc.counts().zstd_tries, 500u);
  EXPECT_EQ(enc.counts().zstd, 500u);
}

TEST(EncoderCostModelTest, BacksOffWhileItDoesNotPayAndResetsWhenItDoes) {
  EncoderCostModel m;
  auto window = [&](bool paid) {
    for (uint32_t i = 0; i < EncoderCostModel::kWindow; ++i) {
      ASSERT_TRUE(m.ShouldTry());
      m.Record(paid);
    }
  };
  auto skipped = [&] {
    uint32_t n = 0;
    while (!m.ShouldTry()) ++n;
    m.Record(false);  // the probe that ended the skip is a try like any other
    return n;
  };
  window(true);
  EXPECT_TRUE(m.ShouldTry()) << "a window that paid skips nothing";
  m.Record(true);
  for (uint32_t i = 1; i < EncoderCostModel::kWindow; ++i) m.Record(true);
  window(false);
  EXPECT_EQ(skipped(), EncoderCostModel::kMinBackoff);
  for (uint32_t i = 1; i < EncoderCostModel::kWindow; ++i) m.Record(false);
  EXPECT_EQ(skipped(), 2 * EncoderCostModel::kMinBackoff) << "a probe that still did not pay doubles the backoff";
  for (uint32_t i = 1; i < EncoderCostModel::kWindow; ++i) m.Record(false);
  uint32_t last = 0;
  for (int i = 0; i < 8; ++i) {
    last = skipped();
    for (uint32_t j = 1; j < EncoderCostModel::kWindow; ++j) m.Record(false);
  }
  EXPECT_EQ(last, EncoderCostModel::kMaxBackoff) << "the backoff is capped";
  // A probe window in which 1/8 paid brings the encoder back for every page.
  EXPECT_EQ(skipped(), EncoderCostModel::kMaxBackoff);
  for (uint32_t j = 1; j < EncoderCostModel::kWindow; ++j) m.Record(j <= EncoderCostModel::kWindow / 8);
  EXPECT_EQ(m.backoff(), EncoderCostModel::kMinBackoff);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(m.ShouldTry());
}

TEST(PageEncoderTest, StopsTryingDeltasOnRewrittenRandomPagesAndProbesAgain) {
  // A checkpoint's working set rewritten with random data: every page is cached, no delta
  // pays, and trying each one costs a scan of the page.
  const uint64_t kSet = 64;
  PageEncoder enc(EncoderOptions{.compress = false, .xbzrle_cache_pages = kSet});
  std::mt19937 rng(12);
  BatchBuilder b;
  std::vector<Page> held(kSet);
  for (int round = 0; round < 40; ++round) {
    for (uint64_t i = 0; i < kSet; ++i) {
      b.Start();
      held[i] = RandomPage(rng);
      enc.Encode(i, held[i].data(), true, &b);
    }
  }
  EXPECT_EQ(enc.counts().xbzrle, 0u);
  EXPECT_LT(enc.counts().xbzrle_tries, 40 * kSet / 4) << "a delta was tried on most rewritten pages";
  // Small edits from now on: deltas pay again and come back within the backoff.
  std::map<uint64_t, Page> receiver;
  uint64_t first_delta = 0;
  for (uint64_t n = 0; n < 2 * EncoderCostModel::kMaxBackoff && !first_delta; ++n) {
    const uint64_t i = n % kSet;
    Page next = held[i];
    next[n % kPageBytes] ^= 0x5a;
    receiver = {{i, held[i]}};
    Decoded d = EncodeOne(enc, i, next, true, receiver);
    EXPECT_TRUE(d.bytes == next) << "page " << i;
    if (d.encoding == PageEncoding::kXbzrle) first_delta = n + 1;
    held[i] = next;
  }
  EXPECT_GT(first_delta, 0u) << "deltas never came back for small edits";
}

TEST(PageDecoderTest, RefusesGarbageAndATruncatedFrame) {
  PageDecoder dec;
  Page out(kPageBytes);
  std::vector<uint8_t> garbage(100, 0x42);
  EXPECT_FALSE(dec.Zstd(garbage, out.data()).ok());
  // A real page's zstd frame decodes; the same frame cut short does not.
  PageEncoder enc(EncoderOptions{});
  BatchBuilder b;
  b.Start();
  enc.Encode(0, TextPage().data(), false, &b);
  std::vector<uint8_t> frame;
  ASSERT_TRUE(DecodePageBatch(b.Finish(), 1, [&](const PageRecord& r) {
                frame.assign(r.data.begin(), r.data.end());
                return Status::Ok();
              }).ok());
  ASSERT_FALSE(frame.empty());
  EXPECT_TRUE(dec.Zstd(frame, out.data()).ok());
  EXPECT_FALSE(dec.Zstd(std::span<const uint8_t>(frame.data(), frame.size() - 1), out.data()).ok());
}

TEST(PageDecoderTest, AFrameMustInflateToExactlyOnePage) {
  auto compress = [](size_t n) {
    Page src = TextPage();
    src.resize(n, 'z');
    std::vector<uint8_t> out(ZSTD_compressBound(n));
    out.resize(ZSTD_compress(out.data(), out.size(), src.data(), n, 1));
    return out;
  };
  PageDecoder dec;
  Page out(kPageBytes + 64, 0xcc);
  EXPECT_TRUE(dec.Zstd(compress(kPageBytes), out.data()).ok());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + kPageBytes, TextPage().begin()));
  Status st = dec.Zstd(compress(100), out.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("100 bytes"), std::string::npos) << st.message();
  std::fill(out.begin(), out.end(), 0xcc);
  EXPECT_FALSE(dec.Zstd(compress(kPageBytes + 1), out.data()).ok());
  for (size_t i = kPageBytes; i < out.size(); ++i) ASSERT_EQ(out[i], 0xcc) << "wrote past the page at " << i;
}

// Sampled pages decide; others only follow.
TEST(SampledCostModelTest, TurnsOffForAllButItsSampleAndBackOn) {
  SampledCostModel m;
  std::vector<uint64_t> sampled, other;
  for (uint64_t p = 0; sampled.size() < 64 || other.size() < 64; ++p) (m.Sampled(p) ? sampled : other).push_back(p);
  EXPECT_GT(sampled.size() * 32, other.size()) << "about 1 in 16 pages is sampled (by default)";
  EXPECT_LT(sampled.size() * 8, other.size());
  EXPECT_TRUE(m.ShouldKeep(other[0]));
  for (int i = 0; i < 64; ++i) m.Record(other[i], false);  // not sampled: no say
  EXPECT_TRUE(m.on());
  for (int i = 0; i < 15; ++i) m.Record(sampled[i], false);
  EXPECT_TRUE(m.on()) << "a window is 16 sampled outcomes";
  m.Record(sampled[15], false);
  EXPECT_FALSE(m.on());
  EXPECT_FALSE(m.ShouldKeep(other[0]));
  EXPECT_TRUE(m.ShouldKeep(sampled[0])) << "the sample always keeps its state";
  for (int i = 0; i < 14; ++i) m.Record(sampled[i], false);
  m.Record(sampled[14], true);
  m.Record(sampled[15], true);  // 2 of 16 paid: 1/8
  EXPECT_TRUE(m.on());
}

Page Touched(Page p, size_t at) {
  p[at % kPageBytes] ^= 0x5a;
  return p;
}

// The delta's base is the copy the cache kept at the page's last send. A page resent while
// caching is off (its deltas did not pay) is forgotten, so when caching comes back it is not
// deltaed against the copy from before: the destination holds the newer page.
TEST(PageEncoderTest, APageResentWhileCachingIsOffIsNotDeltaedAgainstAnOlderCopy) {
  PageEncoder enc(EncoderOptions{.compress = false, .xbzrle_cache_pages = 4096});
  std::mt19937 rng(11);
  const SampledCostModel cache_sample(PageEncoder::kCacheSampleLog2);
  std::vector<uint64_t> sampled;
  uint64_t q = 0;
  for (uint64_t p = 1; sampled.size() < 16; ++p) {
    if (cache_sample.Sampled(p)) sampled.push_back(p);
  }
  while (cache_sample.Sampled(q) || std::find(sampled.begin(), sampled.end(), q) != sampled.end()) ++q;
  std::map<uint64_t, Page> held;  // what the destination holds
  auto send = [&](uint64_t index, const Page& page) {
    Decoded d = EncodeOne(enc, index, page, true, held);
    held[index] = page;
    return d.encoding;
  };
  const Page a = RandomPage(rng);
  send(q, a);  // cached: caching is on
  for (uint64_t s : sampled) send(s, RandomPage(rng));
  for (uint64_t s : sampled) send(s, RandomPage(rng));  // 16 sampled deltas fail: caching off
  const Page b = RandomPage(rng);
  send(q, b);  // not cached, and a's copy forgotten
  for (uint64_t s : sampled) send(s, Touched(held[s], s));  // 16 sampled deltas pay: caching on
  EXPECT_GE(enc.counts().xbzrle, 16u);
  // q is back near a, but the destination holds b: EncodeOne checks it decodes against b.
  EXPECT_NE(send(q, Touched(a, 7)), PageEncoding::kXbzrle);
}

// With N streams an encoder sees every N-th 1 MiB block only; its cache slots are numbered
// over those pages, so a cache as large as the stream's share holds all of it.
TEST(PageEncoderTest, AStreamsCacheHoldsAsManyOfItsPagesAsItHasSlots) {
  PageEncoder enc(EncoderOptions{.compress = false, .xbzrle_cache_pages = 2 * kBlockPages, .streams = 2});
  std::mt19937 rng(12);
  std::map<uint64_t, Page> held;
  std::vector<uint64_t> mine;  // stream 0 of 2: blocks 0 and 2
  for (uint64_t p = 0; p < kBlockPages; ++p) mine.push_back(p);
  for (uint64_t p = 2 * kBlockPages; p < 3 * kBlockPages; ++p) mine.push_back(p);
  for (uint64_t p : mine) held[p] = RandomPage(rng);
  for (uint64_t p : mine) EncodeOne(enc, p, held[p], true, held);  // cached
  for (uint64_t p : mine) {
    Page next = Touched(held[p], p);
    EncodeOne(enc, p, next, true, held);
    held[p] = next;
  }
  EXPECT_EQ(enc.counts().xbzrle, mine.size()) << "a page found no cached copy: slots shared within the stream";
}

}  // namespace
}  // namespace ferry::migrate
