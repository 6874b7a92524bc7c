#include "ferry/migrate/protocol.h"

#include <cstring>

#include "ferry/base/checksum.h"
#include "ferry/base/coding.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/checkpoint_protocol.h"
#include "ferry/migrate/postcopy_protocol.h"

namespace ferry::migrate {
namespace {

constexpr uint32_t kMaxReason = 1024;
constexpr uint32_t kMaxReport = 4096;
// Config (<= 4 KiB path + args) plus the fixed fields.
constexpr uint32_t kMaxBegin = 16384;
// Every vCPU's registers and XSAVE area plus devices, with room to spare.
constexpr uint32_t kMaxState = 8u << 20;

uint64_t HeaderSeed(std::span<const uint8_t> h) { return LoadLe64(h.data()) ^ LoadLe64(h.data() + 8); }

template <size_t N>
bool GetArray(Decoder& d, std::array<uint8_t, N>* out) {
  std::span<const uint8_t> s;
  if (!d.GetBytes(N, &s)) return false;
  std::memcpy(out->data(), s.data(), N);
  return true;
}

Status Malformed(const char* what) { return Corrupt(std::string("malformed ") + what + " message"); }

}  // namespace

const char* MsgTypeName(uint16_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello: return "hello";
    case MsgType::kChallenge: return "challenge";
    case MsgType::kAuth: return "auth";
    case MsgType::kWelcome: return "welcome";
    case MsgType::kBegin: return "begin";
    case MsgType::kReady: return "ready";
    case MsgType::kState: return "state";
    case MsgType::kPrepared: return "prepared";
    case MsgType::kCommit: return "commit";
    case MsgType::kStarted: return "started";
    case MsgType::kVerifyResult: return "verify-result";
    case MsgType::kAbort: return "abort";
    case MsgType::kError: return "error";
    case MsgType::kSync: return "sync";
    case MsgType::kSynced: return "synced";
    case MsgType::kPages: return "pages";
    case MsgType::kStreamEnd: return "stream-end";
    case MsgType::kCheckpoint: return "checkpoint";
    case MsgType::kCheckpointAck: return "checkpoint-ack";
    case MsgType::kDiskWrites: return "disk-writes";
    case MsgType::kEpochEnd: return "epoch-end";
    case MsgType::kHandover: return "handover";
    case MsgType::kHandoverDone: return "handover-done";
    case MsgType::kPageRequest: return "page-request";
    case MsgType::kPageReply: return "page-reply";
    case MsgType::kPostcopyState: return "postcopy-state";
    case MsgType::kPostcopyComplete: return "postcopy-complete";
    case MsgType::kPostcopyEnd: return "postcopy-end";
    case MsgType::kPostcopyReleased: return "postcopy-released";
  }
  return "unknown";
}

uint32_t MaxPayload(uint16_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello: return 1 + 4 + 1 + kNonceBytes + kSessionBytes;
    case MsgType::kChallenge: return 1 + kNonceBytes + kMacBytes;
    case MsgType::kAuth: return kMacBytes;
    case MsgType::kWelcome: return kSessionBytes;
    case MsgType::kBegin: return kMaxBegin;
    case MsgType::kState: return kMaxState;
    case MsgType::kStarted: return 16;
    case MsgType::kVerifyResult: return 1 + 4 + kMaxReport;
    case MsgType::kAbort:
    case MsgType::kError:
    case MsgType::kPostcopyReleased: return 4 + kMaxReason;
    case MsgType::kPages: return kMaxPayload;
    case MsgType::kStreamEnd: return 16;
    case MsgType::kCheckpoint: return 8 + 4 + 8 * kMaxStreams + 4 + 4 + kMaxState;
    case MsgType::kCheckpointAck: return 8;
    case MsgType::kDiskWrites: return kMaxDiskWritesPayload;
    case MsgType::kEpochEnd: return 24;
    case MsgType::kHandover:
    case MsgType::kHandoverDone: return 8;
    case MsgType::kSync: return 4 + 8 * kMaxStreams;
    case MsgType::kPageRequest: return 8 + 8 + 4;
    case MsgType::kPageReply: return 8 + 8 + 4 + kMaxPagesPerBatch * kPageBytes;
    case MsgType::kPostcopyState: return kMaxPostcopyStatePayload;
    case MsgType::kPostcopyComplete: return kPostcopyCompletePayload;
    case MsgType::kPostcopyEnd:
    case MsgType::kSynced:
    case MsgType::kReady:
    case MsgType::kPrepared:
    case MsgType::kCommit: return 0;
  }
  return 0;
}

std::array<uint8_t, kHeaderSize> EncodeHeader(MsgType type, uint32_t seq, std::span<const uint8_t> payload, bool checksummed) {
  std::array<uint8_t, kHeaderSize> h{};
  Encoder e;
  e.PutU32(kMagic);
  e.PutU16(kVersion);
  e.PutU16(static_cast<uint16_t>(type));
  e.PutU32(static_cast<uint32_t>(payload.size()));
  e.PutU32(seq);
  std::memcpy(h.data(), e.bytes().data(), 16);
  StoreLe64(h.data() + 16, checksummed ? Checksum64Seeded(payload.data(), payload.size(), HeaderSeed(h)) : 0);
  return h;
}

Result<FrameHeader> DecodeHeader(std::span<const uint8_t> header) {
  if (header.size() != kHeaderSize) return Corrupt("short frame header");
  Decoder d(header);
  uint32_t magic = 0;
  uint16_t version = 0;
  FrameHeader h;
  d.GetU32(&magic);
  d.GetU16(&version);
  d.GetU16(&h.type);
  d.GetU32(&h.length);
  d.GetU32(&h.seq);
  d.GetU64(&h.checksum);
  if (magic != kMagic) return Corrupt("not a Ferry migration stream (bad frame magic)");
  if (version != kVersion) {
    return Unsupported("peer speaks migration protocol version " + std::to_string(version) + ", this build speaks " +
                       std::to_string(kVersion));
  }
  if (std::string(MsgTypeName(h.type)) == "unknown") return Corrupt("unknown message type " + std::to_string(h.type));
  if (h.length > MaxPayload(h.type)) {
    return Corrupt(std::string(MsgTypeName(h.type)) + " message too long (" + std::to_string(h.length) + " bytes)");
  }
  return h;
}

Status VerifyPayload(std::span<const uint8_t> header_bytes, const FrameHeader& h, std::span<const uint8_t> payload,
                     bool checksummed) {
  if (payload.size() != h.length) return Corrupt("frame length mismatch");
  if (!checksummed) return Status::Ok();
  if (Checksum64Seeded(payload.data(), payload.size(), HeaderSeed(header_bytes)) != h.checksum) {
    return Corrupt(std::string(MsgTypeName(h.type)) + " message checksum mismatch (frame " + std::to_string(h.seq) + ")");
  }
  return Status::Ok();
}

std::vector<uint8_t> EncodeHello(const Hello& m) {
  Encoder e;
  e.PutU8(static_cast<uint8_t>(m.role));
  e.PutU32(m.stream);
  e.PutU8(m.have_key ? 1 : 0);
  e.PutBytes(m.nonce);
  e.PutBytes(m.session);
  return e.Take();
}

Result<Hello> DecodeHello(std::span<const uint8_t> p) {
  Decoder d(p);
  Hello m;
  uint8_t role = 0, key = 0;
  d.GetU8(&role);
  d.GetU32(&m.stream);
  d.GetU8(&key);
  if (!GetArray(d, &m.nonce) || !GetArray(d, &m.session) || d.remaining() != 0) return Malformed("hello");
  if (role != 1 && role != 2) return Malformed("hello (role)");
  if (key > 1) return Malformed("hello (key flag)");
  m.role = static_cast<Role>(role);
  m.have_key = key == 1;
  if (m.stream >= kMaxStreams) return Corrupt("hello names stream " + std::to_string(m.stream));
  return m;
}

std::vector<uint8_t> EncodeChallenge(const Challenge& m) {
  Encoder e;
  e.PutU8(m.have_key ? 1 : 0);
  e.PutBytes(m.nonce);
  e.PutBytes(m.mac);
  return e.Take();
}

Result<Challenge> DecodeChallenge(std::span<const uint8_t> p) {
  Decoder d(p);
  Challenge m;
  uint8_t key = 0;
  d.GetU8(&key);
  if (!GetArray(d, &m.nonce) || !GetArray(d, &m.mac) || d.remaining() != 0 || key > 1) return Malformed("challenge");
  m.have_key = key == 1;
  return m;
}

Result<std::array<uint8_t, kMacBytes>> DecodeMac(std::span<const uint8_t> p) {
  std::array<uint8_t, kMacBytes> mac{};
  if (p.size() != kMacBytes) return Malformed("auth");
  std::memcpy(mac.data(), p.data(), kMacBytes);
  return mac;
}

Result<std::array<uint8_t, kSessionBytes>> DecodeSession(std::span<const uint8_t> p) {
  std::array<uint8_t, kSessionBytes> s{};
  if (p.size() != kSessionBytes) return Malformed("welcome");
  std::memcpy(s.data(), p.data(), kSessionBytes);
  return s;
}

std::vector<uint8_t> EncodeBegin(const Begin& m) {
  Encoder e;
  auto config = hypervisor::EncodeVmConfig(m.config);
  e.PutU32(static_cast<uint32_t>(config.size()));
  e.PutBytes(config);
  e.PutU32(m.streams);
  e.PutU32(kPageBytes);
  e.PutU64(m.generation);
  e.PutU32((m.verify ? 1u : 0u) | (m.replication ? 2u : 0u) | (m.postcopy ? 4u : 0u));  // flags
  return e.Take();
}

Result<Begin> DecodeBegin(std::span<const uint8_t> p) {
  Decoder d(p);
  Begin m;
  uint32_t len = 0, page = 0;
  std::span<const uint8_t> config;
  if (!d.GetU32(&len) || !d.GetBytes(len, &config)) return Malformed("begin");
  FERRY_RETURN_IF_ERROR(hypervisor::DecodeVmConfig(config, &m.config).Annotate("begin"));
  d.GetU32(&m.streams);
  d.GetU32(&page);
  d.GetU64(&m.generation);
  uint32_t flags = 0;
  d.GetU32(&flags);
  if (!d.ok() || d.remaining() != 0) return Malformed("begin");
  if (flags > 7) return Unsupported("begin carries unknown flags");
  m.verify = flags & 1;
  m.replication = flags & 2;
  m.postcopy = flags & 4;
  if (m.replication && m.postcopy) return Corrupt("begin asks for replication and post-copy at once");
  if (m.streams == 0 || m.streams > kMaxStreams) return Corrupt("begin asks for " + std::to_string(m.streams) + " streams");
  if (page != kPageBytes) return Unsupported("peer uses " + std::to_string(page) + "-byte pages");
  return m;
}

std::vector<uint8_t> EncodeState(const StateMsg& m) {
  Encoder e;
  e.PutU32(static_cast<uint32_t>(m.stream_frames.size()));
  for (uint64_t f : m.stream_frames) e.PutU64(f);
  e.PutU32(static_cast<uint32_t>(m.vm_state.size()));
  e.PutBytes(m.vm_state);
  return e.Take();
}

Result<StateMsg> DecodeState(std::span<const uint8_t> p, uint32_t streams) {
  Decoder d(p);
  StateMsg m;
  uint32_t n = 0, len = 0;
  if (!d.GetU32(&n) || n != streams) return Corrupt("state message names the wrong number of streams");
  m.stream_frames.resize(n);
  for (auto& f : m.stream_frames) d.GetU64(&f);
  std::span<const uint8_t> vm;
  if (!d.GetU32(&len) || !d.GetBytes(len, &vm) || d.remaining() != 0) return Malformed("state");
  m.vm_state.assign(vm.begin(), vm.end());
  return m;
}

std::vector<uint8_t> EncodeSync(const std::vector<uint64_t>& frames) {
  Encoder e;
  e.PutU32(static_cast<uint32_t>(frames.size()));
  for (uint64_t f : frames) e.PutU64(f);
  return e.Take();
}

Result<std::vector<uint64_t>> DecodeSync(std::span<const uint8_t> p, uint32_t streams) {
  Decoder d(p);
  uint32_t n = 0;
  if (!d.GetU32(&n) || n != streams) return Corrupt("sync message names the wrong number of streams");
  std::vector<uint64_t> frames(n);
  for (auto& f : frames) d.GetU64(&f);
  if (!d.ok() || d.remaining() != 0) return Malformed("sync");
  return frames;
}

std::vector<uint8_t> EncodeStarted(const Started& m) {
  Encoder e;
  e.PutU64(m.resume_ns);
  e.PutU64(m.guest_resume_ns);
  return e.Take();
}

Result<Started> DecodeStarted(std::span<const uint8_t> p) {
  Decoder d(p);
  Started m;
  d.GetU64(&m.resume_ns);
  if (!d.GetU64(&m.guest_resume_ns) || d.remaining() != 0) return Malformed("started");
  return m;
}

std::vector<uint8_t> EncodeVerifyResult(const VerifyResult& m) {
  Encoder e;
  e.PutU8(m.passed ? 1 : 0);
  e.PutString(m.report.substr(0, kMaxReport));
  return e.Take();
}

Result<VerifyResult> DecodeVerifyResult(std::span<const uint8_t> p) {
  Decoder d(p);
  VerifyResult m;
  uint8_t passed = 0;
  d.GetU8(&passed);
  if (!d.GetString(&m.report, kMaxReport) || d.remaining() != 0 || passed > 1) return Malformed("verify-result");
  m.passed = passed == 1;
  return m;
}

std::vector<uint8_t> EncodeReason(const std::string& reason) {
  Encoder e;
  e.PutString(reason.substr(0, kMaxReason));
  return e.Take();
}

Result<std::string> DecodeReason(std::span<const uint8_t> p) {
  Decoder d(p);
  std::string s;
  if (!d.GetString(&s, kMaxReason) || d.remaining() != 0) return Malformed("error");
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';  // a peer's text reaches a terminal
  }
  return s;
}

std::vector<uint8_t> EncodeStreamEnd(const StreamEnd& m) {
  Encoder e;
  e.PutU64(m.pages);
  e.PutU64(m.frames);
  return e.Take();
}

Result<StreamEnd> DecodeStreamEnd(std::span<const uint8_t> p) {
  Decoder d(p);
  StreamEnd m;
  d.GetU64(&m.pages);
  if (!d.GetU64(&m.frames) || d.remaining() != 0) return Malformed("stream-end");
  return m;
}

void BatchBuilder::Start() {
  buf_.clear();
  buf_.resize(4, 0);
  end_ = 4;
  count_ = 0;
}

uint8_t* BatchBuilder::Reserve(uint64_t page, PageEncoding encoding, uint32_t max_len) {
  record_ = end_;  // an abandoned reservation is simply overwritten
  buf_.resize(record_ + kRecordHeaderSize + max_len);
  uint8_t* h = buf_.data() + record_;
  StoreLe64(h, page);
  h[8] = static_cast<uint8_t>(encoding);
  return h + kRecordHeaderSize;
}

void BatchBuilder::Commit(uint32_t len) {
  uint8_t* h = buf_.data() + record_ + 9;
  for (int i = 0; i < 4; ++i) h[i] = static_cast<uint8_t>(len >> (8 * i));
  end_ = record_ + kRecordHeaderSize + len;
  ++count_;
}

std::span<const uint8_t> BatchBuilder::Finish() {
  buf_.resize(end_);
  for (int i = 0; i < 4; ++i) buf_[i] = static_cast<uint8_t>(count_ >> (8 * i));
  return buf_;
}

Status DecodePageBatch(std::span<const uint8_t> payload, uint64_t mem_pages,
                       const std::function<Status(const PageRecord&)>& fn) {
  Decoder d(payload);
  uint32_t count = 0;
  if (!d.GetU32(&count)) return Corrupt("page batch: truncated count");
  if (count == 0 || count > kMaxPagesPerBatch) return Corrupt("page batch: invalid count " + std::to_string(count));
  uint64_t next = 0;  // pages ascend within a batch: none twice, so no record reads another's
  for (uint32_t i = 0; i < count; ++i) {
    PageRecord r;
    uint8_t enc = 0;
    uint32_t len = 0;
    d.GetU64(&r.page);
    d.GetU8(&enc);
    if (!d.GetU32(&len)) return Corrupt("page batch: truncated record header");
    if (r.page >= mem_pages) return Corrupt("page batch: page " + std::to_string(r.page) + " lies outside guest RAM");
    if (r.page < next) return Corrupt("page batch: pages out of order");
    next = r.page + 1;
    switch (static_cast<PageEncoding>(enc)) {
      case PageEncoding::kZero:
        if (len != 0) return Corrupt("page batch: a zero page carries data");
        break;
      case PageEncoding::kRaw:
        if (len != kPageBytes) return Corrupt("page batch: a raw page is not 4096 bytes");
        break;
      case PageEncoding::kZstd:
      case PageEncoding::kXbzrle:
        if (len == 0 || len >= kPageBytes) return Corrupt("page batch: invalid encoded length " + std::to_string(len));
        break;
      default:
        return Corrupt("page batch: unknown page encoding " + std::to_string(enc));
    }
    r.encoding = static_cast<PageEncoding>(enc);
    if (!d.GetBytes(len, &r.data)) return Corrupt("page batch: truncated page data");
    FERRY_RETURN_IF_ERROR(fn(r));
  }
  if (d.remaining() != 0) return Corrupt("page batch: trailing bytes");
  return Status::Ok();
}

}  // namespace ferry::migrate
