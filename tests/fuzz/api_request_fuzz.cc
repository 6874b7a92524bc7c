// libFuzzer target for the VM host API (vmhost/): what arrives on the API socket is decoded
// (DecodeRequest), admitted by the lifecycle (Lifecycle::Begin/End) and dispatched
// (VmHost::Handle). Any request must decode to a value within API.md's rules or be refused
// with invalid_argument, never throw; the lifecycle must follow its table and never leave a
// terminal phase nor run a fenced guest; and a host without a VM (incoming, standby with no
// replica attached) must answer every request with an object carrying a boolean "ok", succeed
// only for status and stop, and never fail with "internal" (Handle's catch-all for a throw).
//
// Each input is used twice: parsed as JSON text (the socket's path; the seeds are one valid
// request per op), and read as bytes that build a request object: the first byte picks the
// op from ApiOps(), then each of ApiFields(op) is left out or given a fuzzer-chosen value
// (null, bools, negative and huge integers, NaN and infinities, strings with invalid UTF-8 or
// NUL, arrays, objects), so every decoder's checks are reached without guessing field names.
//
// Each document gets fresh VmHosts: "stop" moves a VM-less host to its terminal phase, so a
// host reused across inputs would answer every later input from "stopped" and the fuzzer
// would stop reaching the incoming and standby paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/vmhost/lifecycle.h"
#include "ferry/vmhost/requests.h"
#include "ferry/vmhost/vm_host.h"

namespace {

using namespace ferry;
using namespace ferry::vmhost;
using nlohmann::json;

// Aborts, naming the line of the rule that broke, so a crash report says which one it was.
void Check(bool ok, int line = __builtin_LINE()) {
  if (ok) return;
  std::fprintf(stderr, "api_request_fuzz: check failed at line %d\n", line);
  std::abort();
}

// Reads the input front to back; past its end every read yields zeros.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | Byte();
    return v;
  }
  std::string Bytes(size_t n) {
    n = std::min(n, size_ - pos_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Numbers at and around the decoders' bounds (API.md): ranges, 2^40 caps, 2^53, 2^64.
constexpr uint64_t kEdges[] = {0, 1, 2, 15, 16, 17, 24, 25, 99, 100, 101, 255, 256, 1000, 30000, 60000, 60001,
                               600000, 600001, 3600000, 3600001, 1ull << 20, 64ull << 20, 1ull << 40,
                               (1ull << 40) + 1, kMaxGeneration, kMaxGeneration + 1,
                               static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                               static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1,
                               std::numeric_limits<uint64_t>::max()};

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kDoubles[] = {std::numeric_limits<double>::quiet_NaN(), -std::numeric_limits<double>::quiet_NaN(),
                           kInf, -kInf, -0.0, 0.0, 0.005, 0.01, 0.1, 0.5, 1.0, 1.5, -1.0, 25.0, 99.0, 99.5, 600.0,
                           600.0000001, 60000.0, 1e300, 9007199254740992.0, 9223372036854775808.0,
                           18446744073709551616.0, 18446744073709549568.0, std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::denorm_min()};

const char* const kStrings[] = {"", "127.0.0.1:4410", "[::1]:7000", "::1:7000", "127.0.0.2:0", "127.0.0.2:65535",
                                "127.0.0.2:65536", "127.0.0.2:99999", "127.1.2.3:00080", "host:80", ":80", "[::1]",
                                "[]:1", "[fe80::1%lo]:1", "127.0.0.1:", "127.0.0.1:-1", "tcp", "rdma", "zstd",
                                "none", "TCP", "00112233445566778899aabbccddeeff", "00112233445566778899aabbccddee",
                                "abc", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "/tmp/ferry-api-fuzz.snap", "op", "status",
                                "timout_ms"};

constexpr size_t kLongLengths[] = {64, 65, 256, 257, 4096, 4097, 8192, 8193};

json Value(ByteReader& in, int depth) {
  switch (in.Byte() % 14) {
    case 0: return nullptr;
    case 1: return (in.Byte() & 1) != 0;
    case 2: return static_cast<int64_t>(static_cast<int8_t>(in.Byte()));
    case 3: return static_cast<int64_t>(in.U64());  // half of them negative
    case 4: return in.U64();
    case 5: {
      // Any bit pattern: NaNs with payloads, infinities, subnormals.
      const uint64_t bits = in.U64();
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return json(d);
    }
    case 6: return json(kDoubles[in.Byte() % std::size(kDoubles)]);
    case 7: {
      const uint8_t b = in.Byte();
      const uint64_t e = kEdges[b % std::size(kEdges)];
      if (b & 0x80 && e <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return -static_cast<int64_t>(e);
      }
      return b & 0x40 ? json(static_cast<int64_t>(e & INT64_MAX)) : json(e);
    }
    case 8: return json(static_cast<double>(kEdges[in.Byte() % std::size(kEdges)]));
    case 9: return in.Bytes(in.Byte() % 48);  // raw: invalid UTF-8, NUL bytes
    case 10: return kStrings[in.Byte() % std::size(kStrings)];
    case 11: return std::string(kLongLengths[in.Byte() % std::size(kLongLengths)], 'a');
    case 12: {
      json a = json::array();
      if (depth < 3) {
        for (int n = in.Byte() % 4; n > 0; --n) a.push_back(Value(in, depth + 1));
      }
      return a;
    }
    default: {
      json o = json::object();
      if (depth < 3) {
        for (int n = in.Byte() % 4; n > 0; --n) o[kStrings[in.Byte() % std::size(kStrings)]] = Value(in, depth + 1);
      }
      return o;
    }
  }
}

// A request object for an op the first byte picks, its fields drawn from ApiFields().
json BuildRequest(ByteReader& in) {
  const auto& ops = ApiOps();
  const std::string& op = ops[in.Byte() % ops.size()];
  json request = json::object();
  switch (in.Byte() % 16) {
    case 0: request["op"] = Value(in, 0); break;  // anything where the name belongs
    case 1: request["op"] = op + in.Bytes(in.Byte() % 4); break;
    case 2: break;  // no op at all
    default: request["op"] = op; break;
  }
  for (const auto& field : ApiFields(op)) {
    if (in.Byte() % 4 != 0) request[field] = Value(in, 0);
  }
  const uint8_t extra = in.Byte();
  if (extra % 8 == 0) request[in.Bytes(extra % 24)] = Value(in, 0);  // a field no decoder reads
  if (extra % 32 == 1) return json::array({request});
  return request;
}

// The memory cap DecodeRequest applies to a migration's cache (requests.cc's MemoryCap).
uint64_t MemoryCap(const DecodeLimits& l) {
  uint64_t cap = l.guest_mem_bytes ? l.guest_mem_bytes : UINT64_MAX;
  if (l.host_mem_available) cap = std::min(cap, l.host_mem_available / 2);
  return cap;
}

void CheckPeer(const PeerFields& p) {
  Check(!p.to.empty() && p.to.size() <= 256);
  Check(!p.security.key || p.security.key->bytes.size() >= 16);
  Check(!(p.security.key && p.security.certs) && !(p.security.insecure && p.security.tls()));
  Check(p.transport == "tcp" || p.transport == "rdma");
  Check(p.streams >= 1 && p.streams <= 16);
}

bool InRange(double x, double min, double max) { return std::isfinite(x) && x >= min && x <= max; }

// A request that decodes is what API.md promises: a known op, only its fields, each in range.
void CheckDecoded(const json& request, const Result<Request>& r, const DecodeLimits& l) {
  if (!r.ok()) {
    Check(r.status().code() == ErrorCode::kInvalidArgument && !r.status().message().empty());
    return;
  }
  Check(request.is_object() && request.contains("op") && request["op"].is_string());
  const std::string op = request["op"].get<std::string>();
  const auto fields = ApiFields(op);
  for (const auto& [key, value] : request.items()) {
    Check(key == "op" || std::find(fields.begin(), fields.end(), key) != fields.end());
  }
  const auto event = ParseEvent(op);
  Check(event.has_value());
  const auto* resume = std::get_if<ResumeRequest>(&r->body);
  Check(r->event == (resume && resume->force ? Event::kForceResume : *event));
  std::visit(
      [&](const auto& q) {
        using T = std::decay_t<decltype(q)>;
        if constexpr (std::is_same_v<T, SnapshotRequest>) {
          Check(!q.file.empty() && q.file.size() <= 4096 && q.file.find('\0') == std::string::npos);
        } else if constexpr (std::is_same_v<T, VerifyRequest>) {
          Check(q.timeout_ms >= 1 && q.timeout_ms <= 3600000);
        } else if constexpr (std::is_same_v<T, DirtyRateRequest>) {
          Check(InRange(q.seconds, 0.01, 600) && InRange(q.interval_ms, 1, 60000));
        } else if constexpr (std::is_same_v<T, ThrottleRequest>) {
          Check(q.percent <= 99 && q.vcpu >= -1 && q.vcpu <= (l.vcpus ? static_cast<int64_t>(l.vcpus) - 1 : 255));
        } else if constexpr (std::is_same_v<T, MigrateRequest>) {
          CheckPeer(q.peer);
          Check(q.bandwidth <= 1ull << 40 && q.xbzrle_cache <= std::min<uint64_t>(1ull << 40, MemoryCap(l)));
          Check(q.io_timeout_ms >= 100 && q.io_timeout_ms <= 3600000 && InRange(q.downtime_ms, 0.1, 60000));
          Check(q.deadline_ms >= 100 && q.deadline_ms <= 7 * 24 * 3600000ull);
        } else if constexpr (std::is_same_v<T, ReplicateRequest>) {
          CheckPeer(q.peer);
          Check(q.io_timeout_ms >= 100 && q.io_timeout_ms <= 3600000);
          Check(!q.generation || *q.generation <= kMaxGeneration);
          Check(q.sync_bandwidth <= 1ull << 40 && q.interval_ms >= 1 && q.interval_ms <= 60000);
          Check(q.max_interval_ms <= 600000 && q.wait_ms <= 3600000);
        } else if constexpr (std::is_same_v<T, HandoverRequest>) {
          Check(!q.generation || (*q.generation > l.generation && *q.generation <= kMaxGeneration));
        } else if constexpr (std::is_same_v<T, SetGenerationRequest>) {
          Check(q.generation >= l.generation && q.generation <= kMaxGeneration);
        } else if constexpr (std::is_same_v<T, PromoteRequest>) {
          Check(q.generation <= kMaxGeneration);
        }
      },
      r->body);
}

constexpr int kRequestEvents = static_cast<int>(Event::kStatus) + 1;  // kPause..kStatus
constexpr int kOutcomeEvents = kEventCount - kRequestEvents;          // kArrived..kVmStopped

Event RequestEvent(uint8_t b) { return static_cast<Event>(b % kRequestEvents); }
Event OutcomeEvent(uint8_t b) { return static_cast<Event>(kRequestEvents + b % kOutcomeEvents); }

// What holds after any step: a terminal phase is left only by a row of the table (a VM
// arriving at a host stopped as it arrived: LIFECYCLE.md), into fenced instead when a fence
// came first (found by this fuzzer: the row's target, running, was checked without the fence
// that holds it), a refused step changes nothing, and a fenced guest does not run.
void CheckStep(Phase before, Phase after, bool admitted, const Lifecycle& lc, Event event) {
  const auto row = Transition(before, event);
  const bool table_exit = row && (after == *row || (lc.fenced() && after == Phase::kFenced));
  if ((IsTerminal(before) && !table_exit) || !admitted) Check(after == before);
  Check(!lc.fenced() || !GuestRuns(after));
}

void FuzzLifecycle(Event event, ByteReader& in) {
  const Event outcome = OutcomeEvent(in.Byte());
  for (int i = 0; i < kPhaseCount; ++i) {
    const Phase phase = static_cast<Phase>(i);
    Lifecycle lc(phase);
    auto from = lc.Begin(event);
    // Without a fence or an operation before it, the object follows the table exactly.
    if (event != Event::kFence) {
      const auto to = Transition(phase, event);
      Check(from.ok() == to.has_value() && lc.phase() == to.value_or(phase));
    }
    if (from.ok()) Check(*from == phase);
    CheckStep(phase, lc.phase(), from.ok(), lc, event);
    const Phase held = lc.phase();
    const bool ended = lc.End(outcome).ok();
    CheckStep(held, lc.phase(), ended, lc, outcome);
  }
  // Then a run of requests and outcomes, as the API and the operations would report them,
  // from a phase a VmHost starts in (a Lifecycle made in kFenced would lack the fence flag).
  const Phase starts[] = {Phase::kBooting, Phase::kIncoming, Phase::kStandby};
  Lifecycle lc(starts[in.Byte() % std::size(starts)]);
  for (int n = in.Byte() % 32; n > 0; --n) {
    const uint8_t b = in.Byte();
    const Phase before = lc.phase();
    const Event event = b & 0x80 ? OutcomeEvent(b) : RequestEvent(b);
    bool admitted;
    if (b & 0x80) {
      admitted = lc.End(event).ok();
    } else {
      auto from = lc.Begin(event);
      admitted = from.ok();
      if (admitted) Check(*from == before);
      if (admitted && event == Event::kFence) Check(lc.fenced());
    }
    CheckStep(before, lc.phase(), admitted, lc, event);
  }
}

void CheckReply(const json& reply) {
  Check(reply.is_object() && reply.contains("ok") && reply["ok"].is_boolean());
  if (!reply["ok"].get<bool>()) {
    Check(reply.contains("error") && reply["error"].is_string() && reply.contains("code") && reply["code"].is_string());
    Check(reply["code"].get<std::string>() != "internal");  // what Handle answers when something threw
  }
  (void)reply.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A host without a VM: only status, stop and lease (admitted in every phase: LIFECYCLE.md)
// may succeed; status still answers afterwards.
void FuzzHost(Phase phase, const json& request) {
  VmHost host(phase);
  const ApiEmit emit = [](const json& line) {
    Check(line.is_object());
    (void)line.dump(-1, ' ', false, json::error_handler_t::replace);
  };
  const json reply = host.Handle(request, emit);
  CheckReply(reply);
  std::string op;
  if (request.is_object() && request.contains("op") && request["op"].is_string()) op = request["op"].get<std::string>();
  if (reply["ok"].get<bool>()) Check(op == "status" || op == "stop" || op == "lease");
  const json status = host.Handle({{"op", "status"}}, emit);
  CheckReply(status);
  Check(status["ok"].get<bool>() && status.contains("state") && status["state"].is_string());
  const auto state = ParsePhase(status["state"].get<std::string>());
  Check(state.has_value() && *state == host.phase());
  if (op == "stop" && reply["ok"].get<bool>()) Check(*state == Phase::kStopped);
}

void FuzzDocument(const json& request, ByteReader& in) {
  const DecodeLimits limits[] = {
      DecodeLimits{},                                // no VM, nothing known: no caps
      DecodeLimits{256ull << 20, 2, 8ull << 30, 5},  // a small VM on a real host
      DecodeLimits{in.U64(), static_cast<uint32_t>(in.U64()), in.U64(), in.U64()},  // anything
  };
  std::optional<Event> event;
  for (const auto& l : limits) {
    auto r = DecodeRequest(request, l);
    CheckDecoded(request, r, l);
    if (r.ok() && !event) event = r->event;
  }
  FuzzLifecycle(event.value_or(RequestEvent(in.Byte())), in);
  FuzzHost(Phase::kIncoming, request);
  FuzzHost(Phase::kStandby, request);  // no SetStandby(): promote has no replica to start
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As the API server reads a line: JSON text, parse errors as a value rather than a throw.
  const json text = json::parse(data, data + size, nullptr, false);
  if (!text.is_discarded()) {
    ByteReader choices(data, size);  // the third limits and the lifecycle's steps
    FuzzDocument(text, choices);
  }
  ByteReader in(data, size);
  const json built = BuildRequest(in);
  FuzzDocument(built, in);
  return 0;
}
