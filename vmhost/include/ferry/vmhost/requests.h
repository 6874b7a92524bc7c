// The VM host API's requests as typed values. DecodeRequest() turns one untrusted JSON object
// (a line from the API socket) into a Request or an InvalidArgument naming the field and
// the rule it broke: types, ranges, finite numbers, string lengths, unknown fields, and
// sizes against what this host and this VM can give. It never throws; handlers never see raw
// JSON. The fields of every op are documented in vmhost/API.md (a test keeps the two equal).
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/migrate/auth.h"
#include "ferry/migrate/migration.h"
#include "ferry/migrate/security.h"
#include "ferry/vmhost/lifecycle.h"

namespace ferry::vmhost {

// What a request is checked against.
struct DecodeLimits {
  uint64_t guest_mem_bytes = 0;   // 0: no VM here (incoming, standby)
  uint32_t vcpus = 0;
  uint64_t host_mem_available = 0;  // MemAvailable of this host; 0: unknown (no size check)
  uint64_t generation = 0;        // the VM's current one
};

// The connection fields a migration and a replication share.
struct PeerFields {
  std::string to;                   // HOST:PORT, checked
  migrate::Security security;       // key (hex), tls_* PEM text, insecure in JSON
  std::string transport = "tcp";    // tcp | rdma
  uint32_t streams = 2;
  bool compress = true;
};

// Copies the peer fields into a migrate::MigrateOptions or replication::ReplicateOptions.
template <class Options>
void ApplyPeer(const PeerFields& p, Options* o) {
  o->to = p.to;
  o->security = p.security;
  o->transport = p.transport;
  o->streams = p.streams;
  o->compress = p.compress;
}

struct StatusRequest {};
struct PauseRequest {};
struct ResumeRequest { bool force = false; };
struct StopRequest { bool force = false; };
struct SnapshotRequest {
  std::string file;
  bool stop = false;
  bool fsync = true;
};
struct VerifyRequest { uint64_t timeout_ms = 30000; };
struct DirtyRateRequest {
  double seconds = 1.0;
  double interval_ms = 100.0;
};
struct ThrottleRequest {
  uint32_t percent = 0;
  int32_t vcpu = -1;  // -1: every vCPU
};
struct MigrateRequest {
  PeerFields peer;
  uint64_t bandwidth = 0;  // bytes/s, 0: no cap
  uint64_t xbzrle_cache = 64ull << 20;
  bool verify = false;
  uint64_t io_timeout_ms = 20000;
  double downtime_ms = 50;
  uint64_t deadline_ms = 120000;
  bool auto_converge = true;
  migrate::MigrationMode mode = migrate::MigrationMode::kPrecopy;
  uint64_t postcopy_after_ms = 0;  // auto mode: switch after this long (0: when pre-copy cannot converge)
};
struct ReplicateRequest {
  PeerFields peer;
  uint64_t io_timeout_ms = 3000;
  std::optional<uint64_t> generation;
  bool hold_on_failure = false;
  uint64_t sync_bandwidth = 0;
  uint64_t interval_ms = 25;
  uint64_t max_interval_ms = 0;  // 0: the replicator's default (at least interval_ms)
  bool throttle = true;
  uint64_t wait_ms = 300000;
};
struct ReplicateStopRequest {
  // Close without telling the standby and keep the guest's output held: the standby keeps its
  // last checkpoint as a valid fallback until a new standby holds one (make-before-break).
  bool keep_standby = false;
};
struct HandoverRequest { std::optional<uint64_t> generation; };
struct FenceRequest {};
struct UnfenceRequest {};
struct ReleaseOutputRequest {};
struct SetGenerationRequest { uint64_t generation = 0; };
// The HA agent's watchdog lease: renewed for ttl_ms more (0 ends it).
struct LeaseRequest { uint64_t ttl_ms = 0; };
struct PromoteRequest {
  bool force = false;
  uint64_t generation = 0;  // 0: the replica's own
};

using RequestBody = std::variant<StatusRequest, PauseRequest, ResumeRequest, StopRequest, SnapshotRequest,
                                 VerifyRequest, DirtyRateRequest, ThrottleRequest, MigrateRequest, ReplicateRequest,
                                 ReplicateStopRequest, HandoverRequest, FenceRequest, UnfenceRequest,
                                 ReleaseOutputRequest, SetGenerationRequest, PromoteRequest, LeaseRequest>;

struct Request {
  Event event;  // what the lifecycle is asked to admit (resume with force: kForceResume)
  RequestBody body;
};

// The largest generation a request may carry (beyond it, JSON numbers lose precision).
inline constexpr uint64_t kMaxGeneration = (1ull << 53) - 1;
inline constexpr uint64_t kMaxLeaseMs = 600000;  // a lease longer than 10 minutes is no watchdog

Result<Request> DecodeRequest(const nlohmann::json& request, const DecodeLimits& limits);

// The op names the API accepts, in the order API.md lists them.
const std::vector<std::string>& ApiOps();
// The field names `op`'s decoder reads (for the test that keeps API.md true).
std::vector<std::string> ApiFields(const std::string& op);

// Hex text for a key in a request (the CLI loads the key file; the API socket is owner-only).
std::string KeyToHex(const std::vector<uint8_t>& bytes);
Result<migrate::Key> KeyFromHex(const std::string& hex);
// The request fields for `security` ("key", "tls_cert", "tls_key", "tls_ca", "tls_peer_name",
// "insecure"): what DecodeRequest reads back into PeerFields::security.
void SecurityToRequest(const migrate::Security& security, nlohmann::json* request);

// This host's MemAvailable from /proc/meminfo (0 if unreadable).
uint64_t HostMemAvailable();
uint64_t HostMemTotal();

}  // namespace ferry::vmhost
