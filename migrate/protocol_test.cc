// The migration wire protocol without sockets: frame headers, every message's round trip and
// its refusal of truncated, extended and out-of-range input, and the page batch format.
#include "ferry/migrate/protocol.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "ferry/base/coding.h"
#include "ferry/hypervisor/vm_state_codec.h"

#include "fuzz_seed.h"

namespace ferry::migrate {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// Every strict prefix and the message plus one byte must be refused by `decode` (which
// returns a Status or a Result).
template <typename DecodeFn>
void ExpectTruncationsAndTrailingRefused(const std::vector<uint8_t>& good, DecodeFn decode) {
  ASSERT_TRUE(decode(good).ok());
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(decode(std::span<const uint8_t>(good.data(), cut)).ok())
        << "a message cut to " << cut << " of " << good.size() << " bytes was accepted";
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(decode(longer).ok()) << "a trailing byte was accepted";
}

// ---- Frame headers ----

TEST(FrameHeaderTest, RoundTripsAndVerifiesPayload) {
  auto payload = RandomBytes(300, 1);
  auto header = EncodeHeader(MsgType::kBegin, 77, payload);
  auto h = DecodeHeader(header);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->type, static_cast<uint16_t>(MsgType::kBegin));
  EXPECT_EQ(h->length, 300u);
  EXPECT_EQ(h->seq, 77u);
  EXPECT_TRUE(VerifyPayload(header, *h, payload).ok());
  EXPECT_EQ(LoadLe64(header.data()) & 0xffffffff, kMagic) << "magic is the first little-endian u32";
}

TEST(FrameHeaderTest, EmptyPayloadRoundTrips) {
  auto header = EncodeHeader(MsgType::kReady, 0, {});
  auto h = DecodeHeader(header);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->length, 0u);
  EXPECT_TRUE(VerifyPayload(header, *h, {}).ok());
}

TEST(FrameHeaderTest, EverySingleBitFlipIsDetected) {
  auto payload = RandomBytes(200, 2);
  auto header = EncodeHeader(MsgType::kBegin, 5, payload);
  std::vector<uint8_t> frame(header.begin(), header.end());
  frame.insert(frame.end(), payload.begin(), payload.end());
  for (size_t bit = 0; bit < frame.size() * 8; ++bit) {
    std::vector<uint8_t> bad = frame;
    bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    std::span<const uint8_t> hb(bad.data(), kHeaderSize);
    std::span<const uint8_t> pb(bad.data() + kHeaderSize, payload.size());
    auto h = DecodeHeader(hb);
    if (!h.ok()) continue;
    EXPECT_FALSE(VerifyPayload(hb, *h, pb).ok()) << "flip of bit " << bit << " (byte " << bit / 8 << ") went unnoticed";
  }
}

TEST(FrameHeaderTest, PayloadOfAnotherFrameIsRefused) {
  // The checksum is seeded with the header: a payload cannot be spliced under another header.
  auto payload = RandomBytes(64, 3);
  auto h0 = EncodeHeader(MsgType::kBegin, 0, payload);
  auto h1 = EncodeHeader(MsgType::kBegin, 1, payload);
  auto d1 = DecodeHeader(h1);
  ASSERT_TRUE(d1.ok());
  FrameHeader spliced = *d1;
  spliced.checksum = DecodeHeader(h0)->checksum;
  EXPECT_FALSE(VerifyPayload(h1, spliced, payload).ok());
}

TEST(FrameHeaderTest, WrongVersionIsUnsupportedWithAClearMessage) {
  auto header = EncodeHeader(MsgType::kHello, 0, {});
  header[4] = static_cast<uint8_t>(kVersion + 1);
  header[5] = 0;
  auto h = DecodeHeader(header);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(h.status().message().find("version " + std::to_string(kVersion + 1)), std::string::npos)
      << h.status().message();
  EXPECT_NE(h.status().message().find("speaks " + std::to_string(kVersion)), std::string::npos) << h.status().message();
}

TEST(FrameHeaderTest, BadMagicShortHeaderAndUnknownTypesAreRefused) {
  auto header = EncodeHeader(MsgType::kReady, 0, {});
  auto bad = header;
  bad[0] ^= 1;
  EXPECT_EQ(DecodeHeader(bad).status().code(), ErrorCode::kCorrupt);
  EXPECT_FALSE(DecodeHeader(std::span<const uint8_t>(header.data(), kHeaderSize - 1)).ok());
  for (uint16_t type : {0, 30, 31, 0xffff}) {
    auto h = header;
    h[6] = static_cast<uint8_t>(type);
    h[7] = static_cast<uint8_t>(type >> 8);
    auto r = DecodeHeader(h);
    EXPECT_FALSE(r.ok()) << "type " << type;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("unknown message type"), std::string::npos);
    }
  }
}

void SetLength(std::array<uint8_t, kHeaderSize>& h, uint32_t len) {
  for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<uint8_t>(len >> (8 * i));
}

TEST(FrameHeaderTest, LengthAboveTheTypesLimitIsRefused) {
  auto pages = EncodeHeader(MsgType::kPages, 0, {});
  SetLength(pages, kMaxPayload);
  EXPECT_TRUE(DecodeHeader(pages).ok());
  SetLength(pages, kMaxPayload + 1);
  auto r = DecodeHeader(pages);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("too long"), std::string::npos) << r.status().message();
  SetLength(pages, 0xffffffff);
  EXPECT_FALSE(DecodeHeader(pages).ok());

  // Messages without a payload refuse a single byte; fixed-size messages one past their size.
  uint8_t one = 0;
  EXPECT_FALSE(DecodeHeader(EncodeHeader(MsgType::kReady, 0, {&one, 1})).ok());
  EXPECT_FALSE(DecodeHeader(EncodeHeader(MsgType::kCommit, 0, {&one, 1})).ok());
  std::vector<uint8_t> seventeen(17);
  EXPECT_FALSE(DecodeHeader(EncodeHeader(MsgType::kStarted, 0, seventeen)).ok());
  EXPECT_FALSE(DecodeHeader(EncodeHeader(MsgType::kStreamEnd, 0, seventeen)).ok());
  EXPECT_EQ(MaxPayload(static_cast<uint16_t>(MsgType::kHello)), EncodeHello({}).size());
  EXPECT_EQ(MaxPayload(static_cast<uint16_t>(MsgType::kChallenge)), EncodeChallenge({}).size());
}

TEST(FrameHeaderTest, PayloadLengthMustMatchTheHeader) {
  auto payload = RandomBytes(10, 4);
  auto header = EncodeHeader(MsgType::kError, 0, payload);
  auto h = DecodeHeader(header);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(VerifyPayload(header, *h, std::span<const uint8_t>(payload.data(), 9)).ok());
}

// ---- Messages ----

TEST(MessageTest, HelloRoundTripsAndRefusesBadFields) {
  Hello m;
  m.role = Role::kData;
  m.stream = 3;
  m.have_key = true;
  auto nonce = RandomBytes(kNonceBytes, 5), session = RandomBytes(kSessionBytes, 6);
  std::copy(nonce.begin(), nonce.end(), m.nonce.begin());
  std::copy(session.begin(), session.end(), m.session.begin());
  auto p = EncodeHello(m);
  MaybeWriteSeed("hello", MsgType::kHello, 0, p);
  auto d = DecodeHello(p);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->role, Role::kData);
  EXPECT_EQ(d->stream, 3u);
  EXPECT_TRUE(d->have_key);
  EXPECT_EQ(d->nonce, m.nonce);
  EXPECT_EQ(d->session, m.session);
  ExpectTruncationsAndTrailingRefused(p, DecodeHello);

  auto bad = p;
  bad[0] = 3;  // role
  EXPECT_FALSE(DecodeHello(bad).ok());
  bad = p;
  bad[0] = 0;
  EXPECT_FALSE(DecodeHello(bad).ok());
  bad = p;
  bad[5] = 2;  // key flag
  EXPECT_FALSE(DecodeHello(bad).ok());
  m.stream = kMaxStreams - 1;
  EXPECT_TRUE(DecodeHello(EncodeHello(m)).ok());
  m.stream = kMaxStreams;
  EXPECT_FALSE(DecodeHello(EncodeHello(m)).ok());
}

TEST(MessageTest, ChallengeMacAndSessionRoundTrip) {
  Challenge c;
  c.have_key = true;
  auto nonce = RandomBytes(kNonceBytes, 7), mac = RandomBytes(kMacBytes, 8);
  std::copy(nonce.begin(), nonce.end(), c.nonce.begin());
  std::copy(mac.begin(), mac.end(), c.mac.begin());
  auto p = EncodeChallenge(c);
  MaybeWriteSeed("challenge", MsgType::kChallenge, 0, p);
  auto d = DecodeChallenge(p);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d->have_key);
  EXPECT_EQ(d->nonce, c.nonce);
  EXPECT_EQ(d->mac, c.mac);
  ExpectTruncationsAndTrailingRefused(p, DecodeChallenge);
  auto bad = p;
  bad[0] = 2;
  EXPECT_FALSE(DecodeChallenge(bad).ok());

  auto m = DecodeMac(mac);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, c.mac);
  ExpectTruncationsAndTrailingRefused(mac, DecodeMac);
  auto s = DecodeSession(std::span<const uint8_t>(mac.data(), kSessionBytes));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(0, std::memcmp(s->data(), mac.data(), kSessionBytes));
  EXPECT_FALSE(DecodeSession(std::span<const uint8_t>(mac.data(), kSessionBytes + 1)).ok());
}

Begin SampleBegin() {
  Begin m;
  m.config.mem_bytes = 64ull << 20;
  m.config.vcpus = 2;
  m.config.guest_path = "guest/memcheck.elf";
  m.config.guest_args = "mode=verify seed=3";
  m.streams = 4;
  m.generation = 0x0102030405060708ull;
  m.verify = true;
  return m;
}

TEST(MessageTest, BeginRoundTripsAndRefusesBadFields) {
  auto p = EncodeBegin(SampleBegin());
  MaybeWriteSeed("begin", MsgType::kBegin, 0, p);
  auto d = DecodeBegin(p);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->config.mem_bytes, 64ull << 20);
  EXPECT_EQ(d->config.vcpus, 2u);
  EXPECT_EQ(d->config.guest_path, "guest/memcheck.elf");
  EXPECT_EQ(d->config.guest_args, "mode=verify seed=3");
  EXPECT_EQ(d->streams, 4u);
  EXPECT_EQ(d->generation, 0x0102030405060708ull);
  EXPECT_TRUE(d->verify);
  EXPECT_LE(p.size(), MaxPayload(static_cast<uint16_t>(MsgType::kBegin)));
  ExpectTruncationsAndTrailingRefused(p, DecodeBegin);

  Begin m = SampleBegin();
  m.verify = false;
  EXPECT_FALSE(DecodeBegin(EncodeBegin(m))->verify);
  m.streams = 0;
  EXPECT_FALSE(DecodeBegin(EncodeBegin(m)).ok());
  m.streams = kMaxStreams + 1;
  EXPECT_FALSE(DecodeBegin(EncodeBegin(m)).ok());
  m.streams = kMaxStreams;
  EXPECT_TRUE(DecodeBegin(EncodeBegin(m)).ok());
  m.config.mem_bytes = 3ull << 20;  // not a 2 MiB multiple
  EXPECT_FALSE(DecodeBegin(EncodeBegin(m)).ok());

  // The tail is: streams u32, page size u32, generation u64, flags u32.
  auto tail = p.size() - 20;
  auto bad = p;
  bad[tail + 4] = 0;
  bad[tail + 5] = 0x20;  // 8 KiB pages
  auto r = DecodeBegin(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(r.status().message().find("8192-byte pages"), std::string::npos) << r.status().message();
  bad = p;
  bad[tail + 16] = 8;  // an unknown flag
  EXPECT_EQ(DecodeBegin(bad).status().code(), ErrorCode::kUnsupported);
  m = SampleBegin();
  m.replication = true;
  auto rep = DecodeBegin(EncodeBegin(m));
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->replication);
}

TEST(MessageTest, StateRoundTripsAndChecksTheStreamCount) {
  hypervisor::VmState vm;
  vm.config = SampleBegin().config;
  for (uint32_t i = 0; i < vm.config.vcpus; ++i) {
    hypervisor::VcpuState v;
    v.index = i;
    v.regs.rip = 0x400000 + i;
    v.msrs = {{0x174, i}};
    vm.vcpus.push_back(v);
  }
  vm.console.partial_line = "login:";
  vm.clock.guest_ns = 123456789;
  StateMsg m;
  m.stream_frames = {3, 5, 0x100000000ull};
  m.vm_state = hypervisor::EncodeVmState(vm);
  auto p = EncodeState(m);
  auto d = DecodeState(p, 3);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->stream_frames, m.stream_frames);
  EXPECT_EQ(d->vm_state, m.vm_state);
  hypervisor::VmState back;
  ASSERT_TRUE(hypervisor::DecodeVmState(d->vm_state, &back).ok());
  EXPECT_EQ(back.vcpus.size(), 2u);
  EXPECT_EQ(back.vcpus[1].regs.rip, 0x400001u);
  EXPECT_EQ(back.console.partial_line, "login:");
  EXPECT_FALSE(DecodeState(p, 2).ok());
  EXPECT_FALSE(DecodeState(p, 4).ok());
  ExpectTruncationsAndTrailingRefused(p, [](std::span<const uint8_t> s) { return DecodeState(s, 3); });
  // The fuzz seed carries the stream count in its aux byte (streams = 1 + aux % 16).
  MaybeWriteSeed("state", MsgType::kState, 2, p);
  MaybeWriteSeed("vm-state", static_cast<MsgType>(0x40), 0, m.vm_state);
}

TEST(MessageTest, SyncRoundTripsAndChecksTheStreamCount) {
  std::vector<uint64_t> frames = {1, 0, 0xffffffffffull};
  auto p = EncodeSync(frames);
  auto d = DecodeSync(p, 3);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(*d, frames);
  EXPECT_FALSE(DecodeSync(p, 2).ok());
  ExpectTruncationsAndTrailingRefused(p, [](std::span<const uint8_t> s) { return DecodeSync(s, 3); });
  // A sync for the most streams fits its frame limit.
  EXPECT_TRUE(DecodeHeader(EncodeHeader(MsgType::kSync, 0, EncodeSync(std::vector<uint64_t>(kMaxStreams)))).ok());
  MaybeWriteSeed("sync", MsgType::kSync, 2, p);
}

TEST(MessageTest, StartedAndStreamEndRoundTrip) {
  auto p = EncodeStarted({123456789, 0xfedcba9876543210ull});
  MaybeWriteSeed("started", MsgType::kStarted, 0, p);
  auto d = DecodeStarted(p);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->resume_ns, 123456789u);
  EXPECT_EQ(d->guest_resume_ns, 0xfedcba9876543210ull);
  ExpectTruncationsAndTrailingRefused(p, DecodeStarted);

  auto e = EncodeStreamEnd({42, 7});
  MaybeWriteSeed("stream-end", MsgType::kStreamEnd, 0, e);
  auto s = DecodeStreamEnd(e);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->pages, 42u);
  EXPECT_EQ(s->frames, 7u);
  ExpectTruncationsAndTrailingRefused(e, DecodeStreamEnd);
}

TEST(MessageTest, VerifyResultRoundTripsAndRefusesBadFlag) {
  auto p = EncodeVerifyResult({true, "verdict=ok verify_errors=0"});
  MaybeWriteSeed("verify-result", MsgType::kVerifyResult, 0, p);
  auto d = DecodeVerifyResult(p);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->passed);
  EXPECT_EQ(d->report, "verdict=ok verify_errors=0");
  ExpectTruncationsAndTrailingRefused(p, DecodeVerifyResult);
  auto bad = p;
  bad[0] = 2;
  EXPECT_FALSE(DecodeVerifyResult(bad).ok());
  // An overlong report is cut by the encoder so the frame stays within its limit.
  auto big = EncodeVerifyResult({false, std::string(10000, 'x')});
  EXPECT_LE(big.size(), MaxPayload(static_cast<uint16_t>(MsgType::kVerifyResult)));
  auto b = DecodeVerifyResult(big);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->passed);
  EXPECT_EQ(b->report.size(), 4096u);
}

TEST(MessageTest, ReasonRoundTripsAndReplacesControlCharacters) {
  auto p = EncodeReason("disk full on dst");
  MaybeWriteSeed("reason", MsgType::kError, 0, p);
  auto d = DecodeReason(p);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "disk full on dst");
  ExpectTruncationsAndTrailingRefused(p, DecodeReason);

  auto evil = DecodeReason(EncodeReason("a\nb\x1b[2Jc\rd\x7f" "e\tf\x01"));
  ASSERT_TRUE(evil.ok());
  EXPECT_EQ(*evil, "a?b?[2Jc?d?e?f?");
  auto utf8 = DecodeReason(EncodeReason("caf\xc3\xa9"));
  ASSERT_TRUE(utf8.ok());
  EXPECT_EQ(*utf8, "caf\xc3\xa9") << "bytes above 0x7f are left alone";

  auto big = EncodeReason(std::string(5000, 'r'));
  EXPECT_LE(big.size(), MaxPayload(static_cast<uint16_t>(MsgType::kError)));
  EXPECT_EQ(DecodeReason(big)->size(), 1024u);
  Encoder e;  // a peer that does not cut its reason is refused
  e.PutString(std::string(1025, 'r'));
  EXPECT_FALSE(DecodeReason(e.bytes()).ok());
}

// ---- Page batches ----

struct Seen {
  uint64_t page;
  PageEncoding encoding;
  std::vector<uint8_t> data;
};

Status Collect(std::span<const uint8_t> payload, uint64_t mem_pages, std::vector<Seen>* out) {
  out->clear();
  return DecodePageBatch(payload, mem_pages, [&](const PageRecord& r) {
    out->push_back({r.page, r.encoding, std::vector<uint8_t>(r.data.begin(), r.data.end())});
    return Status::Ok();
  });
}

void Add(BatchBuilder& b, uint64_t page, PageEncoding enc, const std::vector<uint8_t>& data) {
  uint8_t* at = b.Reserve(page, enc, static_cast<uint32_t>(data.size()));
  if (!data.empty()) std::memcpy(at, data.data(), data.size());
  b.Commit(static_cast<uint32_t>(data.size()));
}

TEST(PageBatchTest, RoundTripsEveryEncodingAndDropsAnAbandonedReservation) {
  auto raw = RandomBytes(kPageBytes, 10), zstd = RandomBytes(100, 11), delta = RandomBytes(7, 12);
  BatchBuilder b;
  b.Start();
  Add(b, 0, PageEncoding::kZero, {});
  Add(b, 1, PageEncoding::kRaw, raw);
  // As PageEncoder does when zstd does not pay: reserve the most, write, abandon.
  uint8_t* abandoned = b.Reserve(9, PageEncoding::kZstd, kPageBytes - 1);
  std::memset(abandoned, 0xee, kPageBytes - 1);
  Add(b, 2, PageEncoding::kZstd, zstd);
  // A reservation bigger than what is committed.
  uint8_t* at = b.Reserve(3, PageEncoding::kXbzrle, 3000);
  std::memcpy(at, delta.data(), delta.size());
  b.Commit(static_cast<uint32_t>(delta.size()));
  Add(b, 63, PageEncoding::kRaw, raw);
  b.Reserve(11, PageEncoding::kRaw, kPageBytes);  // abandoned at the end: Finish drops it
  EXPECT_EQ(b.count(), 5u);
  auto payload = b.Finish();
  EXPECT_EQ(payload.size(), b.size());
  EXPECT_EQ(payload.size(), 4 + 5 * kRecordHeaderSize + 2 * kPageBytes + zstd.size() + delta.size());
  std::vector<uint8_t> copy(payload.begin(), payload.end());
  MaybeWriteSeed("pages", MsgType::kPages, 63, copy);  // 64 guest pages

  std::vector<Seen> seen;
  Status st = Collect(copy, 64, &seen);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0].page, 0u);
  EXPECT_EQ(seen[0].encoding, PageEncoding::kZero);
  EXPECT_TRUE(seen[0].data.empty());
  EXPECT_EQ(seen[1].page, 1u);
  EXPECT_EQ(seen[1].encoding, PageEncoding::kRaw);
  EXPECT_EQ(seen[1].data, raw);
  EXPECT_EQ(seen[2].page, 2u);
  EXPECT_EQ(seen[2].encoding, PageEncoding::kZstd);
  EXPECT_EQ(seen[2].data, zstd);
  EXPECT_EQ(seen[3].page, 3u);
  EXPECT_EQ(seen[3].encoding, PageEncoding::kXbzrle);
  EXPECT_EQ(seen[3].data, delta);
  EXPECT_EQ(seen[4].page, 63u);
  EXPECT_EQ(seen[4].data, raw);
  ExpectTruncationsAndTrailingRefused(copy, [](std::span<const uint8_t> s) {
    return DecodePageBatch(s, 64, [](const PageRecord&) { return Status::Ok(); });
  });

  // Start() begins a fresh batch in the same builder.
  b.Start();
  Add(b, 7, PageEncoding::kZero, {});
  ASSERT_TRUE(Collect(b.Finish(), 8, &seen).ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].page, 7u);
}

TEST(PageBatchTest, AFullBatchOfRawPagesFitsTheFrameLimit) {
  auto raw = RandomBytes(kPageBytes, 13);
  BatchBuilder b;
  b.Start();
  for (uint32_t i = 0; i < kMaxPagesPerBatch; ++i) Add(b, i, PageEncoding::kRaw, raw);
  auto payload = b.Finish();
  EXPECT_EQ(payload.size(), kMaxPayload);
  EXPECT_TRUE(DecodeHeader(EncodeHeader(MsgType::kPages, 0, payload)).ok());
  std::vector<Seen> seen;
  ASSERT_TRUE(Collect(payload, kMaxPagesPerBatch, &seen).ok());
  EXPECT_EQ(seen.size(), kMaxPagesPerBatch);
}

// One hand-built record: u64 page, u8 encoding, u32 length, `data`.
void PutRecord(Encoder& e, uint64_t page, uint8_t enc, uint32_t len, size_t data_bytes) {
  e.PutU64(page);
  e.PutU8(enc);
  e.PutU32(len);
  e.PutBytes(std::vector<uint8_t>(data_bytes, 0x5a));
}

// A one-record batch carrying `len` data bytes (at most two pages of them).
std::vector<uint8_t> OneRecord(uint64_t page, uint8_t enc, uint32_t len) {
  Encoder e;
  e.PutU32(1);
  PutRecord(e, page, enc, len, std::min<size_t>(len, 2 * kPageBytes));
  return e.Take();
}

Status Decode(std::span<const uint8_t> p, uint64_t mem_pages = 16) {
  return DecodePageBatch(p, mem_pages, [](const PageRecord&) { return Status::Ok(); });
}

constexpr uint8_t kZero = 1, kRaw = 2, kZstd = 3, kXbzrle = 4;

TEST(PageBatchTest, RefusesPagesOutsideGuestRam) {
  EXPECT_TRUE(Decode(OneRecord(15, kZero, 0), 16).ok());
  Status st = Decode(OneRecord(16, kZero, 0), 16);
  EXPECT_EQ(st.code(), ErrorCode::kCorrupt);
  EXPECT_NE(st.message().find("outside guest RAM"), std::string::npos) << st.message();
  EXPECT_FALSE(Decode(OneRecord(~0ull, kRaw, kPageBytes), 16).ok());
  EXPECT_FALSE(Decode(OneRecord(0, kZero, 0), 0).ok());
}

TEST(PageBatchTest, RefusesUnknownEncodings) {
  for (uint8_t enc : {0, 5, 0x80, 0xff}) {
    Status st = Decode(OneRecord(0, enc, 0));
    EXPECT_FALSE(st.ok()) << "encoding " << int(enc);
    EXPECT_NE(st.message().find("unknown page encoding"), std::string::npos) << st.message();
  }
}

TEST(PageBatchTest, RefusesLengthsTheEncodingDoesNotAllow) {
  EXPECT_FALSE(Decode(OneRecord(0, kZero, 1)).ok()) << "zero page with data";
  EXPECT_TRUE(Decode(OneRecord(0, kRaw, kPageBytes)).ok());
  EXPECT_FALSE(Decode(OneRecord(0, kRaw, kPageBytes - 1)).ok());
  EXPECT_FALSE(Decode(OneRecord(0, kRaw, kPageBytes + 1)).ok());
  EXPECT_FALSE(Decode(OneRecord(0, kRaw, 0)).ok());
  for (uint8_t enc : {kZstd, kXbzrle}) {
    EXPECT_TRUE(Decode(OneRecord(0, enc, 1)).ok()) << int(enc);
    EXPECT_TRUE(Decode(OneRecord(0, enc, kPageBytes - 1)).ok()) << int(enc);
    EXPECT_FALSE(Decode(OneRecord(0, enc, 0)).ok()) << int(enc);
    EXPECT_FALSE(Decode(OneRecord(0, enc, kPageBytes)).ok()) << int(enc);
    EXPECT_FALSE(Decode(OneRecord(0, enc, 0xffffffff)).ok()) << int(enc);
  }
}

TEST(PageBatchTest, RefusesBadCounts) {
  Encoder none;
  none.PutU32(0);
  EXPECT_FALSE(Decode(none.bytes()).ok()) << "an empty batch";
  EXPECT_FALSE(Decode({}).ok()) << "no count at all";

  auto batch_of = [](uint32_t count, uint32_t records) {
    Encoder e;
    e.PutU32(count);
    for (uint32_t i = 0; i < records; ++i) PutRecord(e, i, kZero, 0, 0);
    return e.Take();
  };
  const uint64_t pages = 1024;
  EXPECT_TRUE(Decode(batch_of(kMaxPagesPerBatch, kMaxPagesPerBatch), pages).ok());
  EXPECT_FALSE(Decode(batch_of(kMaxPagesPerBatch + 1, kMaxPagesPerBatch + 1), pages).ok());
  EXPECT_FALSE(Decode(batch_of(0xffffffff, 1), pages).ok());
  EXPECT_FALSE(Decode(batch_of(2, 1), pages).ok()) << "fewer records than counted";
  EXPECT_FALSE(Decode(batch_of(1, 2), pages).ok()) << "more records than counted";
}

TEST(PageBatchTest, RefusesRepeatedOrDescendingPages) {
  for (auto order : {std::vector<uint64_t>{3, 3}, std::vector<uint64_t>{5, 4}}) {
    Encoder e;
    e.PutU32(2);
    for (uint64_t p : order) PutRecord(e, p, kZero, 0, 0);
    Status st = Decode(e.bytes());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("out of order"), std::string::npos) << st.message();
  }
}

TEST(PageBatchTest, RefusesTruncatedDataAndTrailingBytes) {
  Encoder e;
  e.PutU32(1);
  PutRecord(e, 0, kRaw, kPageBytes, kPageBytes - 1);
  Status st = Decode(e.bytes());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.message();

  auto trailing = OneRecord(0, kXbzrle, 10);
  trailing.push_back(0);
  st = Decode(trailing);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("trailing"), std::string::npos) << st.message();
}

TEST(PageBatchTest, StopsAtTheFirstFailingRecord) {
  Encoder e;
  e.PutU32(3);
  for (uint64_t p = 0; p < 3; ++p) PutRecord(e, p, kZero, 0, 0);
  int calls = 0;
  Status st = DecodePageBatch(e.bytes(), 16, [&](const PageRecord& r) {
    ++calls;
    return r.page == 1 ? Corrupt("sink refused page 1") : Status::Ok();
  });
  EXPECT_EQ(st.message(), "sink refused page 1");
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace ferry::migrate
