// libFuzzer target for what a migration destination, a replication standby and a post-copy
// peer decode from the wire (migrate/protocol.h, checkpoint_protocol.h, postcopy_protocol.h,
// page_codec.h, hypervisor::DecodeVmState): any byte string must be accepted or refused with
// a Status — never a crash, an out-of-bounds access, or a page written outside guest memory.
//
// Input: one type byte, one aux byte, then a payload. The payload goes straight to the
// decoder that type selects, so the fuzzer need not forge a frame checksum to reach it; the
// frame header path is fuzzed too, on the input's first 24 bytes. Decoders that accept must
// also re-encode to the same bytes (the formats are canonical), so an asymmetric encoder and
// decoder crash here as well. One more mode plays a sender's PageEncoder against this
// receiver over a few evolving pages: what lands must equal what was sent. Seeds: the unit
// tests' valid messages (scripts/fuzz).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/checkpoint_protocol.h"
#include "ferry/migrate/page_codec.h"
#include "ferry/migrate/postcopy_protocol.h"
#include "ferry/migrate/protocol.h"

namespace {

using namespace ferry;
using namespace ferry::migrate;

// Types beyond the protocol's, for the other decoders.
constexpr uint8_t kVmStateInput = 0x40;   // hypervisor::DecodeVmState
constexpr uint8_t kXbzrleInput = 0x41;    // XbzrleDecode onto an aux-filled page
constexpr uint8_t kDeltaRoundTrip = 0x42; // XbzrleEncode of a page edit, decoded back
constexpr uint8_t kEncoderVsReceiver = 0x43;  // PageEncoder's records applied by a receiver

constexpr uint64_t kGuestPages = 64;

void Check(bool ok) {
  if (!ok) std::abort();
}

template <typename Decoded, typename EncodeFn>
void ExpectCanonical(const Result<Decoded>& d, std::span<const uint8_t> p, EncodeFn encode) {
  if (!d.ok()) return;
  auto again = encode(d.value());
  Check(again.size() == p.size() && std::equal(again.begin(), again.end(), p.begin()));
}

void FuzzFrameHeader(std::span<const uint8_t> in) {
  if (in.size() < kHeaderSize) return;
  auto header = in.first(kHeaderSize);
  auto h = DecodeHeader(header);
  if (!h.ok()) return;
  Check(h->length <= MaxPayload(h->type));
  (void)VerifyPayload(header, *h, in.subspan(kHeaderSize));
}

// The receiver's page sink in miniature: every record is applied to a small guest memory.
void FuzzPageBatch(std::span<const uint8_t> p, uint8_t aux) {
  static std::vector<uint8_t> memory(kGuestPages * kPageBytes);
  static PageDecoder decoder;
  alignas(64) static uint8_t scratch[kPageBytes];
  const uint64_t mem_pages = 1 + aux % kGuestPages;
  uint32_t records = 0;
  (void)DecodePageBatch(p, mem_pages, [&](const PageRecord& r) -> Status {
    Check(r.page < mem_pages && ++records <= kMaxPagesPerBatch);
    uint8_t* page = memory.data() + r.page * kPageBytes;
    switch (r.encoding) {
      case PageEncoding::kZero:
        Check(r.data.empty());
        std::memset(page, 0, kPageBytes);
        return Status::Ok();
      case PageEncoding::kRaw:
        Check(r.data.size() == kPageBytes);
        std::memcpy(page, r.data.data(), kPageBytes);
        return Status::Ok();
      case PageEncoding::kZstd:
        Check(!r.data.empty() && r.data.size() < kPageBytes);
        FERRY_RETURN_IF_ERROR(decoder.Zstd(r.data, scratch));
        std::memcpy(page, scratch, kPageBytes);
        return Status::Ok();
      case PageEncoding::kXbzrle:
        Check(!r.data.empty() && r.data.size() < kPageBytes);
        std::memcpy(scratch, page, kPageBytes);
        FERRY_RETURN_IF_ERROR(XbzrleDecode(r.data, scratch));
        std::memcpy(page, scratch, kPageBytes);
        return Status::Ok();
    }
    std::abort();  // DecodePageBatch let an unknown encoding through
  });
}

void FuzzVmState(std::span<const uint8_t> p) {
  hypervisor::VmState state;
  if (!hypervisor::DecodeVmState(p, &state).ok()) return;
  auto again = hypervisor::EncodeVmState(state);
  Check(again.size() == p.size() && std::equal(again.begin(), again.end(), p.begin()));
}

// A standby's disk-write frame against a disk of (aux+1) MiB: every record it hands on lies
// inside the payload and the disk, sector-aligned; what it accepted, the builder writes back
// byte for byte.
void FuzzDiskWrites(std::span<const uint8_t> p, uint8_t aux) {
  const uint64_t disk_bytes = (uint64_t(aux) + 1) << 20;
  DiskWritesBuilder again;
  Status st = DecodeDiskWrites(p, disk_bytes, [&](const DiskRecord& r) {
    Check(r.offset % 512 == 0 && r.length % 512 == 0 && r.length > 0 && r.length <= kMaxDiskWriteBytes);
    Check(r.offset <= disk_bytes && r.length <= disk_bytes - r.offset);
    if (r.zero) {
      Check(r.data.empty());
      again.AddZero(r.offset, r.length);
    } else {
      Check(r.data.size() == r.length && r.data.data() >= p.data() && r.data.data() + r.length <= p.data() + p.size());
      again.Add(r.offset, r.data);
    }
    return Status::Ok();
  });
  if (!st.ok()) return;
  auto bytes = again.Finish();
  Check(bytes.size() == p.size() && std::equal(bytes.begin(), bytes.end(), p.begin()));
}

// A post-copy switchover for a guest of aux*8+1 pages.
void FuzzPostcopyState(std::span<const uint8_t> p, uint8_t aux, uint32_t streams) {
  const uint64_t mem_pages = uint64_t(aux) * 8 + 1;
  auto m = DecodePostcopyState(p, streams, mem_pages);
  if (!m.ok()) return;
  Check(m->stream_frames.size() == streams && m->outstanding.size() == mem_pages);
  ExpectCanonical(m, p, EncodePostcopyState);
  FuzzVmState(m->vm_state);
}

void FuzzXbzrle(std::span<const uint8_t> p, uint8_t aux) {
  alignas(64) static uint8_t page[kPageBytes];
  std::memset(page, aux, kPageBytes);
  (void)XbzrleDecode(p, page);
}

// Old page: the payload's first half, zero-padded. New page: the old one with the second
// half's (offset lo, offset hi, value) triples applied. The delta must bring one to the other.
void FuzzDeltaRoundTrip(std::span<const uint8_t> p, uint8_t aux) {
  alignas(64) static uint8_t old_page[kPageBytes], new_page[kPageBytes], out[kPageBytes];
  static uint8_t delta[2 * kPageBytes];
  const size_t half = std::min<size_t>(p.size() / 2, kPageBytes);
  std::memset(old_page, 0, kPageBytes);
  std::memcpy(old_page, p.data(), half);
  std::memcpy(new_page, old_page, kPageBytes);
  for (size_t i = half; i + 3 <= p.size(); i += 3) new_page[(p[i] | p[i + 1] << 8) % kPageBytes] = p[i + 2];
  const size_t cap = aux & 1 ? sizeof delta : 1 + aux * 16;  // generous, or tight enough to fail
  size_t len = XbzrleEncode(old_page, new_page, delta, cap);
  Check(len <= cap);
  if (len == 0) {
    Check(cap < sizeof delta);  // a page and its run headers always fit two pages
    return;
  }
  std::memcpy(out, old_page, kPageBytes);
  Check(XbzrleDecode({delta, len}, out).ok());
  Check(std::memcmp(out, new_page, kPageBytes) == 0);
}

// Applies a batch as PageSink does (XBZRLE against the receiver's current page).
Status ApplyBatch(std::span<const uint8_t> payload, uint8_t (*memory)[kPageBytes], uint64_t pages) {
  static PageDecoder decoder;
  alignas(64) static uint8_t scratch[kPageBytes];
  return DecodePageBatch(payload, pages, [&](const PageRecord& r) -> Status {
    uint8_t* page = memory[r.page];
    switch (r.encoding) {
      case PageEncoding::kZero: std::memset(page, 0, kPageBytes); break;
      case PageEncoding::kRaw: std::memcpy(page, r.data.data(), kPageBytes); break;
      case PageEncoding::kZstd:
        FERRY_RETURN_IF_ERROR(decoder.Zstd(r.data, scratch));
        std::memcpy(page, scratch, kPageBytes);
        break;
      case PageEncoding::kXbzrle:
        std::memcpy(scratch, page, kPageBytes);
        FERRY_RETURN_IF_ERROR(XbzrleDecode(r.data, scratch));
        std::memcpy(page, scratch, kPageBytes);
        break;
    }
    return Status::Ok();
  });
}

// Four guest pages change under (op, arg) pairs; after each change the page is encoded as the
// sender does (resend once sent before) and applied to the receiver's copy, which must then
// equal the source's.
void FuzzEncoderVsReceiver(std::span<const uint8_t> p, uint8_t aux) {
  constexpr uint64_t kPages = 4;
  alignas(64) static uint8_t source[kPages][kPageBytes], receiver[kPages][kPageBytes];
  std::memset(source, 0, sizeof source);
  std::memset(receiver, 0, sizeof receiver);
  bool sent[kPages] = {};
  PageEncoder enc(EncoderOptions{.compress = (aux & 1) != 0, .xbzrle_cache_pages = 1u + (aux >> 1) % kPages});
  for (size_t i = 0, steps = 0; i + 2 <= p.size() && steps < 64; ++steps) {  // 64: keeps each input fast
    const uint8_t op = p[i], arg = p[i + 1];
    i += 2;
    const uint64_t index = op % kPages;
    uint8_t* page = source[index];
    switch ((op >> 2) % 4) {
      case 0: std::memset(page, 0, kPageBytes); break;
      case 1: {  // a run of `arg + 1` bytes at a 16-bit offset
        if (i + 2 > p.size()) return;
        const size_t at = (p[i] | p[i + 1] << 8) % kPageBytes;
        i += 2;
        for (size_t k = 0; k < arg + 1u && at + k < kPageBytes; ++k) page[at + k] = static_cast<uint8_t>(op + k * arg);
        break;
      }
      case 2:  // compressible text
        for (size_t k = 0; k < kPageBytes; ++k) page[k] = static_cast<uint8_t>('a' + (k + arg) % 23);
        break;
      case 3: page[arg * 16u] ^= static_cast<uint8_t>(op | 1); break;
    }
    BatchBuilder batch;
    batch.Start();
    enc.Encode(index, page, sent[index], &batch);
    sent[index] = true;
    Check(ApplyBatch(batch.Finish(), receiver, kPages).ok());
    Check(std::memcmp(receiver[index], source[index], kPageBytes) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  FuzzFrameHeader(in);
  if (size < 2) return 0;
  const uint8_t type = data[0], aux = data[1];
  const auto p = in.subspan(2);
  const uint32_t streams = 1 + aux % kMaxStreams;

  // A header the sender would write for this payload must pass the receiver's checks.
  if (std::string(MsgTypeName(type)) != "unknown") {
    auto header = EncodeHeader(static_cast<MsgType>(type), aux, p);
    auto h = DecodeHeader(header);
    Check(h.ok() == (p.size() <= MaxPayload(type)));
    if (h.ok()) Check(VerifyPayload(header, *h, p).ok());
  }

  switch (type) {
    case static_cast<uint8_t>(MsgType::kHello): ExpectCanonical(DecodeHello(p), p, EncodeHello); break;
    case static_cast<uint8_t>(MsgType::kChallenge): ExpectCanonical(DecodeChallenge(p), p, EncodeChallenge); break;
    case static_cast<uint8_t>(MsgType::kAuth): (void)DecodeMac(p); break;
    case static_cast<uint8_t>(MsgType::kWelcome): (void)DecodeSession(p); break;
    case static_cast<uint8_t>(MsgType::kBegin): ExpectCanonical(DecodeBegin(p), p, EncodeBegin); break;
    case static_cast<uint8_t>(MsgType::kState): {
      auto s = DecodeState(p, streams);
      ExpectCanonical(s, p, EncodeState);
      if (s.ok()) {
        Check(s->stream_frames.size() == streams);
        FuzzVmState(s->vm_state);
      }
      break;
    }
    case static_cast<uint8_t>(MsgType::kSync): {
      auto s = DecodeSync(p, streams);
      ExpectCanonical(s, p, EncodeSync);
      if (s.ok()) Check(s->size() == streams);
      break;
    }
    case static_cast<uint8_t>(MsgType::kStarted): ExpectCanonical(DecodeStarted(p), p, EncodeStarted); break;
    case static_cast<uint8_t>(MsgType::kVerifyResult):
      ExpectCanonical(DecodeVerifyResult(p), p, EncodeVerifyResult);
      break;
    case static_cast<uint8_t>(MsgType::kAbort):
    case static_cast<uint8_t>(MsgType::kPostcopyReleased):
    case static_cast<uint8_t>(MsgType::kError): {
      auto r = DecodeReason(p);
      if (r.ok()) {
        for (unsigned char c : *r) Check(c >= 0x20 && c != 0x7f);  // nothing reaches a terminal raw
      }
      break;
    }
    case static_cast<uint8_t>(MsgType::kPages): FuzzPageBatch(p, aux); break;
    case static_cast<uint8_t>(MsgType::kStreamEnd): ExpectCanonical(DecodeStreamEnd(p), p, EncodeStreamEnd); break;
    case static_cast<uint8_t>(MsgType::kCheckpoint): {
      auto c = DecodeCheckpoint(p, streams);
      ExpectCanonical(c, p, EncodeCheckpoint);
      if (c.ok()) {
        Check(c->stream_frames.size() == streams);
        FuzzVmState(c->vm_state);
      }
      break;
    }
    case static_cast<uint8_t>(MsgType::kCheckpointAck):
    case static_cast<uint8_t>(MsgType::kHandover):
    case static_cast<uint8_t>(MsgType::kHandoverDone): ExpectCanonical(DecodeEpoch(p), p, EncodeEpoch); break;
    case static_cast<uint8_t>(MsgType::kEpochEnd): ExpectCanonical(DecodeEpochEnd(p), p, EncodeEpochEnd); break;
    case static_cast<uint8_t>(MsgType::kDiskWrites): FuzzDiskWrites(p, aux); break;
    case static_cast<uint8_t>(MsgType::kPostcopyState): FuzzPostcopyState(p, aux, streams); break;
    case static_cast<uint8_t>(MsgType::kPostcopyComplete):
      ExpectCanonical(DecodePostcopyComplete(p), p, EncodePostcopyComplete);
      break;
    case kVmStateInput: FuzzVmState(p); break;
    case kXbzrleInput: FuzzXbzrle(p, aux); break;
    case kDeltaRoundTrip: FuzzDeltaRoundTrip(p, aux); break;
    case kEncoderVsReceiver: FuzzEncoderVsReceiver(p, aux); break;
    default: break;
  }
  return 0;
}
