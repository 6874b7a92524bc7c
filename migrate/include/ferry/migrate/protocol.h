// The migration wire protocol (migrate/PROTOCOL.md): frames, message payloads and the page
// batch format. Pure encoders and validating decoders over byte spans — no sockets, no guest
// memory — so the receiver's decoding is unit-tested and fuzzed on its own.
//
// Every frame is a 24-byte header (magic, version, type, payload length, sequence number,
// XXH3-64 checksum seeded with the header) followed by its payload. Decoders check every
// length, count and index before anything is allocated or written. Thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::migrate {

inline constexpr uint32_t kMagic = 0x47494d46;  // "FMIG" on the wire
// Version 2: the VM config and state carry the PV devices (disk, NIC).
// Version 3: replication (checkpoints, epoch ends, disk writes; begin's replication flag).
// Version 4: post-copy (begin's post-copy flag, its request stream, switchover and completion).
inline constexpr uint16_t kVersion = 6;
inline constexpr size_t kHeaderSize = 24;
inline constexpr uint32_t kPageBytes = 4096;
inline constexpr uint32_t kMaxPagesPerBatch = 256;
// Guest page p travels on data stream (p / kBlockPages) % streams (1 MiB blocks, round robin).
inline constexpr uint64_t kBlockPages = 256;
// A page batch holds at most kMaxPagesPerBatch pages of at most a page each plus headers.
inline constexpr uint32_t kMaxPayload = kMaxPagesPerBatch * (kPageBytes + 13) + 4;
inline constexpr uint32_t kMaxStreams = 16;
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kSessionBytes = 16;

enum class MsgType : uint16_t {
  kHello = 1,         // src -> dst, every connection: role, stream, nonce, session
  kChallenge = 2,     // dst -> src: dst's nonce and its proof of the key
  kAuth = 3,          // src -> dst: src's proof of the key
  kWelcome = 4,       // dst -> src: authenticated; the session id
  kBegin = 5,         // src -> dst (control): VM config, stream count, generation
  kReady = 6,         // dst -> src (control): memory allocated, data streams may connect
  kState = 7,         // src -> dst (control): frames per stream + vCPU and device state
  kPrepared = 8,      // dst -> src (control): complete state held, VM built, not running
  kCommit = 9,        // src -> dst (control): the source has stopped for good; run it
  kStarted = 10,      // dst -> src (control): the VM runs on the destination
  kVerifyResult = 11, // dst -> src (control): the guest's self-verification after resume
  kAbort = 12,        // src -> dst (control): the migration is cancelled; discard
  kError = 13,        // either way, any connection: why the sender gives up
  kSync = 14,         // src -> dst (control): frames sent per stream so far; answer when landed
  kSynced = 15,       // dst -> src (control): every frame named by the sync is in guest memory
  kCheckpoint = 16,   // primary -> standby (control): an epoch's frame counts + vCPU and device state
  kCheckpointAck = 17,  // standby -> primary (control): that checkpoint is applied whole
  kDiskWrites = 18,   // primary -> standby (control): disk writes (initial copy or an epoch's journal)
  kHandover = 19,     // primary -> standby (control): after the acked final checkpoint: run it, at this generation
  kPages = 20,        // src -> dst (data): a batch of page records
  kStreamEnd = 21,    // src -> dst (data): the last frame on this stream
  kEpochEnd = 22,     // primary -> standby (data): the last frame of an epoch's pages on this stream
  kHandoverDone = 23, // standby -> primary (control): the replica runs; the primary must stay stopped
  kPageRequest = 24,  // dst -> src (post-copy stream): send these pages now
  kPageReply = 25,    // src -> dst (post-copy stream): the pages a request asked for, raw
  kPostcopyState = 26,     // src -> dst (control): switchover: frame counts, pages to follow, state
  kPostcopyComplete = 27,  // dst -> src (control): every page is here; waiting for the source's word
  kPostcopyEnd = 28,       // src -> dst (control): the source has stopped for good: release the output
  kPostcopyReleased = 29,  // dst -> src (control): the VM runs there, released (empty reason), or is held (why)
};
const char* MsgTypeName(uint16_t type);

struct FrameHeader {
  uint16_t type = 0;
  uint32_t length = 0;
  uint32_t seq = 0;
  uint64_t checksum = 0;
};

// `checksummed` false (a connection whose transport authenticates every byte: TLS): the
// checksum field is 0 and the payload is not hashed (PROTOCOL.md, "Frames").
std::array<uint8_t, kHeaderSize> EncodeHeader(MsgType type, uint32_t seq, std::span<const uint8_t> payload,
                                              bool checksummed = true);
// Checks magic, version, a known type and the type's length limit.
Result<FrameHeader> DecodeHeader(std::span<const uint8_t> header);
// Checks the payload's length and, when `checksummed`, the header's checksum.
Status VerifyPayload(std::span<const uint8_t> header_bytes, const FrameHeader& h, std::span<const uint8_t> payload,
                     bool checksummed = true);
// The longest payload a message type may carry.
uint32_t MaxPayload(uint16_t type);

enum class Role : uint8_t { kControl = 1, kData = 2 };

struct Hello {
  Role role = Role::kControl;
  uint32_t stream = 0;  // data streams: 0..streams-1
  bool have_key = false;
  std::array<uint8_t, kNonceBytes> nonce{};
  std::array<uint8_t, kSessionBytes> session{};  // data streams: the control's session
};
std::vector<uint8_t> EncodeHello(const Hello& m);
Result<Hello> DecodeHello(std::span<const uint8_t> p);

struct Challenge {
  bool have_key = false;
  std::array<uint8_t, kNonceBytes> nonce{};
  std::array<uint8_t, kMacBytes> mac{};
};
std::vector<uint8_t> EncodeChallenge(const Challenge& m);
Result<Challenge> DecodeChallenge(std::span<const uint8_t> p);
// kAuth carries exactly one MAC; kWelcome exactly one session id.
Result<std::array<uint8_t, kMacBytes>> DecodeMac(std::span<const uint8_t> p);
Result<std::array<uint8_t, kSessionBytes>> DecodeSession(std::span<const uint8_t> p);

struct Begin {
  hypervisor::VmConfig config;
  uint32_t streams = 1;
  uint64_t generation = 0;  // fencing token (HA); 0 until the HA manager assigns one
  bool verify = false;      // the destination reports the guest's self-verification
  bool replication = false; // a standby: checkpoints follow, no commit
  bool postcopy = false;    // the migration may switch to post-copy: one more data connection
                            // (stream index == streams) carries page requests
};
std::vector<uint8_t> EncodeBegin(const Begin& m);
Result<Begin> DecodeBegin(std::span<const uint8_t> p);

struct StateMsg {
  std::vector<uint64_t> stream_frames;  // frames each data stream carried, kStreamEnd included
  std::vector<uint8_t> vm_state;        // hypervisor::EncodeVmState
};
std::vector<uint8_t> EncodeState(const StateMsg& m);
Result<StateMsg> DecodeState(std::span<const uint8_t> p, uint32_t streams);

// kSync: u32 N, N x u64 frames sent on each data stream.
std::vector<uint8_t> EncodeSync(const std::vector<uint64_t>& frames);
Result<std::vector<uint64_t>> DecodeSync(std::span<const uint8_t> p, uint32_t streams);

struct Started {
  uint64_t resume_ns = 0;     // destination: Commit received to vCPUs running
  uint64_t guest_resume_ns = 0;  // the guest's clock when its vCPUs started here
};
std::vector<uint8_t> EncodeStarted(const Started& m);
Result<Started> DecodeStarted(std::span<const uint8_t> p);

struct VerifyResult {
  bool passed = false;
  std::string report;
};
std::vector<uint8_t> EncodeVerifyResult(const VerifyResult& m);
Result<VerifyResult> DecodeVerifyResult(std::span<const uint8_t> p);

// kError and kAbort: a reason for the operator.
std::vector<uint8_t> EncodeReason(const std::string& reason);
Result<std::string> DecodeReason(std::span<const uint8_t> p);

struct StreamEnd {
  uint64_t pages = 0;   // page records this stream carried
  uint64_t frames = 0;  // frames before this one
};
std::vector<uint8_t> EncodeStreamEnd(const StreamEnd& m);
Result<StreamEnd> DecodeStreamEnd(std::span<const uint8_t> p);

// Page records inside a kPages payload: u32 count, then per page u64 index, u8 encoding,
// u32 length, `length` bytes.
enum class PageEncoding : uint8_t { kZero = 1, kRaw = 2, kZstd = 3, kXbzrle = 4 };
inline constexpr size_t kRecordHeaderSize = 13;

struct PageRecord {
  uint64_t page = 0;
  PageEncoding encoding = PageEncoding::kRaw;
  std::span<const uint8_t> data;
};

// Builds a batch in place: Start() reserves the count, Add() appends a record.
class BatchBuilder {
 public:
  void Start();
  // Reserves a record for `page` with room for `max_len` bytes; returns where to write them.
  // A reservation that is not committed is dropped by the next Reserve.
  uint8_t* Reserve(uint64_t page, PageEncoding encoding, uint32_t max_len);
  // Completes the reserved record with its final length (<= max_len).
  void Commit(uint32_t len);
  uint32_t count() const { return count_; }
  std::span<const uint8_t> Finish();
  size_t size() const { return end_; }

 private:
  std::vector<uint8_t> buf_;
  size_t end_ = 0;     // committed bytes
  size_t record_ = 0;  // the reserved record's offset
  uint32_t count_ = 0;
};

// Validates every record (index below mem_pages and above the previous record's, known
// encoding, length allowed for it, no bytes left over) and hands each to `fn` in order.
Status DecodePageBatch(std::span<const uint8_t> payload, uint64_t mem_pages,
                       const std::function<Status(const PageRecord&)>& fn);

}  // namespace ferry::migrate
