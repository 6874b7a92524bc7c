#include "ferry/vmhost/requests.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>

#include "ferry/migrate/transport.h"
#include "field_reader.h"

namespace ferry::vmhost {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxTimeoutMs = 3600000;  // an hour: longer is a typo
constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxPem = 256 * 1024;

void ReadPeer(FieldReader& r, PeerFields* p) {
  r.String("to", &p->to, 256, /*required=*/true);
  if (r.ok()) {
    if (auto ep = migrate::ParseEndpoint(p->to); !ep.ok()) r.Fail("\"to\": " + ep.status().message());
  }
  std::string hex;
  r.String("key", &hex, 8192);
  if (r.ok() && !hex.empty()) {
    auto key = KeyFromHex(hex);
    if (!key.ok()) {
      r.Fail("\"key\": " + key.status().message());
    } else {
      p->security.key = std::move(key).value();
    }
  }
  // Certificates travel as PEM text (the CLI reads the files; the API socket is owner-only).
  std::string cert, cert_key, ca, peer_name;
  r.String("tls_cert", &cert, kMaxPem);
  r.String("tls_key", &cert_key, kMaxPem);
  r.String("tls_ca", &ca, kMaxPem);
  r.String("tls_peer_name", &peer_name, 253);
  r.Bool("insecure", &p->security.insecure);
  if (r.ok() && (!cert.empty() || !cert_key.empty() || !ca.empty())) {
    if (cert.empty() || cert_key.empty() || ca.empty()) {
      r.Fail("\"tls_cert\", \"tls_key\" and \"tls_ca\" go together");
    } else {
      auto certs = migrate::ParseCertificates(std::move(cert), std::move(cert_key), std::move(ca), std::move(peer_name));
      if (!certs.ok()) {
        r.Fail(certs.status().message());
      } else {
        p->security.certs = std::move(certs).value();
      }
    }
  } else if (r.ok() && !peer_name.empty()) {
    r.Fail("\"tls_peer_name\" needs certificates");
  }
  if (r.ok()) {
    if (Status st = migrate::CheckSecurity(p->security); !st.ok()) r.Fail(st.message());
  }
  r.Choice("transport", &p->transport, {"tcp", "rdma"});
  uint64_t streams = p->streams;
  r.U64("streams", &streams, 1, 16);
  p->streams = static_cast<uint32_t>(streams);
  std::string compress = p->compress ? "zstd" : "none";
  r.Choice("compress", &compress, {"zstd", "none"});
  p->compress = compress == "zstd";
}

// The largest cache or buffer a request may ask this host for.
uint64_t MemoryCap(const DecodeLimits& l) {
  uint64_t cap = l.guest_mem_bytes ? l.guest_mem_bytes : UINT64_MAX;
  if (l.host_mem_available) cap = std::min(cap, l.host_mem_available / 2);
  return cap;
}

RequestBody DecodeResume(FieldReader& r, const DecodeLimits&) {
  ResumeRequest q;
  r.Bool("force", &q.force);
  return q;
}

RequestBody DecodeStop(FieldReader& r, const DecodeLimits&) {
  StopRequest q;
  r.Bool("force", &q.force);
  return q;
}

RequestBody DecodeSnapshot(FieldReader& r, const DecodeLimits&) {
  SnapshotRequest q;
  r.String("file", &q.file, kMaxPath, true);
  if (r.ok() && q.file.empty()) r.Fail("\"file\" is empty");
  r.Bool("stop", &q.stop);
  r.Bool("fsync", &q.fsync);
  return q;
}

RequestBody DecodeVerify(FieldReader& r, const DecodeLimits&) {
  VerifyRequest q;
  r.U64("timeout_ms", &q.timeout_ms, 1, kMaxTimeoutMs);
  return q;
}

RequestBody DecodeDirtyRate(FieldReader& r, const DecodeLimits&) {
  DirtyRateRequest q;
  r.Double("seconds", &q.seconds, 0.01, 600);
  r.Double("interval_ms", &q.interval_ms, 1, 60000);
  return q;
}

RequestBody DecodeThrottle(FieldReader& r, const DecodeLimits& l) {
  ThrottleRequest q;
  uint64_t percent = 0;
  r.U64("percent", &percent, 0, 99, true);
  q.percent = static_cast<uint32_t>(percent);
  int64_t vcpu = -1;
  r.I64("vcpu", &vcpu, -1, l.vcpus ? static_cast<int64_t>(l.vcpus) - 1 : 255);
  q.vcpu = static_cast<int32_t>(vcpu);
  return q;
}

RequestBody DecodeMigrate(FieldReader& r, const DecodeLimits& l) {
  MigrateRequest q;
  ReadPeer(r, &q.peer);
  r.U64("bandwidth", &q.bandwidth, 0, 1ull << 40);
  const uint64_t cap = MemoryCap(l);
  std::optional<uint64_t> cache;
  r.OptionalU64("xbzrle_cache", &cache, 0, 1ull << 40);
  // Unasked, the cache is the default cut to what this VM and host allow (a 32 MiB guest gets a
  // 32 MiB cache); asked for, more than that is refused.
  q.xbzrle_cache = cache.value_or(std::min(q.xbzrle_cache, cap));
  if (r.ok() && q.xbzrle_cache > cap) {
    r.Fail("\"xbzrle_cache\" of " + std::to_string(q.xbzrle_cache >> 20) + " MiB is more than this VM's RAM or half " +
           "of this host's available memory allow (" + std::to_string(cap >> 20) + " MiB)");
  }
  r.Bool("verify", &q.verify);
  r.U64("io_timeout_ms", &q.io_timeout_ms, 100, kMaxTimeoutMs);
  r.Double("downtime_ms", &q.downtime_ms, 0.1, 60000);
  r.U64("deadline_ms", &q.deadline_ms, 100, 7 * 24 * kMaxTimeoutMs);
  r.Bool("auto_converge", &q.auto_converge);
  std::string mode = migrate::MigrationModeName(q.mode);
  r.Choice("mode", &mode, {"precopy", "postcopy", "auto"});
  q.mode = migrate::ParseMigrationMode(mode).value_or(migrate::MigrationMode::kPrecopy);
  r.U64("postcopy_after_ms", &q.postcopy_after_ms, 0, 7 * 24 * kMaxTimeoutMs);
  if (r.ok() && q.postcopy_after_ms && q.mode != migrate::MigrationMode::kAuto) {
    r.Fail("\"postcopy_after_ms\" applies to \"mode\": \"auto\" only");
  }
  return q;
}

RequestBody DecodeReplicate(FieldReader& r, const DecodeLimits&) {
  ReplicateRequest q;
  ReadPeer(r, &q.peer);
  r.U64("io_timeout_ms", &q.io_timeout_ms, 100, kMaxTimeoutMs);
  r.OptionalU64("generation", &q.generation, 0, kMaxGeneration);
  r.Bool("hold_on_failure", &q.hold_on_failure);
  r.U64("sync_bandwidth", &q.sync_bandwidth, 0, 1ull << 40);
  r.U64("interval_ms", &q.interval_ms, 1, 60000);
  r.U64("max_interval_ms", &q.max_interval_ms, 0, 600000);
  r.Bool("throttle", &q.throttle);
  r.U64("wait_ms", &q.wait_ms, 0, kMaxTimeoutMs);
  // Epochs may stretch to the longest interval, and a standby hears nothing on its data
  // streams between two: that silence must stay well under the timeout that declares the
  // primary lost (a standby with the same io_timeout_ms would otherwise fail a healthy one).
  // (Without max_interval_ms, VmHost::Replicate caps the stretch at half the timeout.)
  const uint64_t longest = std::max<uint64_t>(q.interval_ms, q.max_interval_ms);
  if (r.ok() && longest * 2 > q.io_timeout_ms) {
    r.Fail("epochs of up to " + std::to_string(longest) + " ms need \"io_timeout_ms\" of at least " +
           std::to_string(longest * 2) + " (it is " + std::to_string(q.io_timeout_ms) +
           "): the standby takes that long a silence for a lost primary");
  }
  return q;
}

RequestBody DecodeHandover(FieldReader& r, const DecodeLimits& l) {
  HandoverRequest q;
  r.OptionalU64("generation", &q.generation, 0, kMaxGeneration);
  if (r.ok() && q.generation && *q.generation <= l.generation) {
    r.Fail("a handover must raise the generation (it is " + std::to_string(l.generation) + ")");
  }
  return q;
}

RequestBody DecodeSetGeneration(FieldReader& r, const DecodeLimits& l) {
  SetGenerationRequest q;
  r.U64("generation", &q.generation, 0, kMaxGeneration, true);
  if (r.ok() && q.generation < l.generation) {
    r.Fail("the generation may only grow (it is " + std::to_string(l.generation) + ")");
  }
  return q;
}

RequestBody DecodeReplicateStop(FieldReader& r, const DecodeLimits&) {
  ReplicateStopRequest q;
  r.Bool("keep_standby", &q.keep_standby);
  return q;
}

RequestBody DecodeLease(FieldReader& r, const DecodeLimits&) {
  LeaseRequest q;
  r.U64("ttl_ms", &q.ttl_ms, 0, kMaxLeaseMs, /*required=*/true);
  return q;
}

RequestBody DecodePromote(FieldReader& r, const DecodeLimits&) {
  PromoteRequest q;
  r.Bool("force", &q.force);
  r.U64("generation", &q.generation, 0, kMaxGeneration);
  return q;
}

template <class T>
RequestBody Empty(FieldReader&, const DecodeLimits&) {
  return T{};
}

struct OpSpec {
  const char* name;
  Event event;
  RequestBody (*decode)(FieldReader&, const DecodeLimits&);
};

// One entry per op; the order is API.md's.
const OpSpec kOps[] = {
    {"status", Event::kStatus, Empty<StatusRequest>},
    {"pause", Event::kPause, Empty<PauseRequest>},
    {"resume", Event::kResume, DecodeResume},
    {"stop", Event::kStop, DecodeStop},
    {"snapshot", Event::kSnapshot, DecodeSnapshot},
    {"verify", Event::kVerify, DecodeVerify},
    {"dirty_rate", Event::kDirtyRate, DecodeDirtyRate},
    {"throttle", Event::kThrottle, DecodeThrottle},
    {"migrate", Event::kMigrate, DecodeMigrate},
    {"replicate", Event::kReplicate, DecodeReplicate},
    {"replicate_stop", Event::kReplicateStop, DecodeReplicateStop},
    {"handover", Event::kHandover, DecodeHandover},
    {"fence", Event::kFence, Empty<FenceRequest>},
    {"unfence", Event::kUnfence, Empty<UnfenceRequest>},
    {"release_output", Event::kReleaseOutput, Empty<ReleaseOutputRequest>},
    {"set_generation", Event::kSetGeneration, DecodeSetGeneration},
    {"lease", Event::kLease, DecodeLease},
    {"promote", Event::kPromote, DecodePromote},
};

const OpSpec* FindOp(const std::string& name) {
  for (const auto& op : kOps) {
    if (name == op.name) return &op;
  }
  return nullptr;
}

}  // namespace

Result<Request> DecodeRequest(const json& request, const DecodeLimits& limits) {
  if (!request.is_object()) return InvalidArgument("the request is not a JSON object");
  auto it = request.find("op");
  if (it == request.end() || !it->is_string()) return InvalidArgument("the request needs \"op\": a string");
  const std::string& name = it->get_ref<const std::string&>();
  const OpSpec* spec = FindOp(name);
  if (!spec) {
    std::string all;
    for (const auto& op : kOps) all += std::string(all.empty() ? "" : ", ") + op.name;
    return InvalidArgument("unknown op \"" + name.substr(0, 64) + "\" (expected one of " + all + ")");
  }
  FieldReader reader(request, name);
  Request out{spec->event, spec->decode(reader, limits)};
  FERRY_RETURN_IF_ERROR(reader.Finish());
  if (auto* resume = std::get_if<ResumeRequest>(&out.body); resume && resume->force) out.event = Event::kForceResume;
  return out;
}

const std::vector<std::string>& ApiOps() {
  static const std::vector<std::string> ops = [] {
    std::vector<std::string> v;
    for (const auto& op : kOps) v.emplace_back(op.name);
    return v;
  }();
  return ops;
}

std::vector<std::string> ApiFields(const std::string& op) {
  const OpSpec* spec = FindOp(op);
  if (!spec) return {};
  json empty = json::object();
  FieldReader reader(empty, op);
  (void)spec->decode(reader, DecodeLimits{});
  return reader.names();
}

std::string KeyToHex(const std::vector<uint8_t>& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t v : bytes) {
    out += kDigits[v >> 4];
    out += kDigits[v & 15];
  }
  return out;
}

void SecurityToRequest(const migrate::Security& s, nlohmann::json* req) {
  if (s.key) (*req)["key"] = KeyToHex(s.key->bytes);
  if (s.certs) {
    (*req)["tls_cert"] = s.certs->cert_pem;
    (*req)["tls_key"] = s.certs->key_pem;
    (*req)["tls_ca"] = s.certs->ca_pem;
    if (!s.certs->peer_name.empty()) (*req)["tls_peer_name"] = s.certs->peer_name;
  }
  if (s.insecure) (*req)["insecure"] = true;
}

Result<migrate::Key> KeyFromHex(const std::string& hex) {
  if (hex.size() % 2 != 0 || hex.size() > 8192) return InvalidArgument("malformed key");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  migrate::Key key;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("malformed key");
    key.bytes.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  if (key.bytes.size() < 16) return InvalidArgument("a key holds at least 16 bytes");
  return key;
}

namespace {
uint64_t MeminfoField(const char* field) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  uint64_t kib = 0;
  std::string unit;
  while (in >> name >> kib) {
    std::getline(in, unit);
    if (name == field) return kib << 10;
  }
  return 0;
}
}  // namespace

uint64_t HostMemAvailable() { return MeminfoField("MemAvailable:"); }
uint64_t HostMemTotal() { return MeminfoField("MemTotal:"); }

}  // namespace ferry::vmhost
