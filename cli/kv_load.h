// KvLoad: the load client behind `ferry kv-load`. It drives a kvstore guest (protocol in
// ferry_kvstore.h) with an open-loop stream of GET/PUT requests over UDP and reports what the
// service's clients saw while it was migrated or failed over: the longest stretch without any
// reply, reads that went back in time, and acknowledged writes that the service later lost.
//
// Consistency rules. PUT values are the run's start time (ns since the epoch) plus the request
// id: unique and increasing, and above any value an earlier run left in the store. A GET must
// answer a value in [the key's highest acknowledged PUT when the GET was sent, the key's newest
// sent PUT]; anything else (NOT_FOUND after an acknowledged PUT included) is a stale read. After
// the load, every key with an acknowledged PUT is read again (verification); each
// acknowledged PUT whose value is above what the service then holds is a lost PUT. A PUT that
// was never answered is neither acknowledged nor lost.
//
// RunKvLoad blocks its caller and runs everything on its own io_context in that thread; the
// only state shared with other threads is `stop`, which any thread may set to end the sending
// phase early (stragglers and verification still run).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry_kvstore.h"

namespace ferry::cli {

struct KvLoadOptions {
  std::string server;          // HOST:PORT, numeric IPv4 or [IPv6]
  std::string bind;            // local ADDR or ADDR:PORT; empty: any
  double rate = 1000;          // requests per second, open loop
  uint64_t duration_ms = 10000;  // 0: until `stop`
  uint64_t keys = 256;         // keys used: 0 .. keys-1 (the guest's keys= must be at least this)
  uint32_t put_percent = 80;   // share of requests that are PUTs
  uint64_t timeout_ms = 1000;  // wait for stragglers, and for each verification attempt
  bool verify = true;
};

struct KvLoadResult {
  // Load phase.
  uint64_t sent = 0;           // requests handed to the socket
  uint64_t puts_sent = 0;
  uint64_t gets_sent = 0;
  uint64_t send_errors = 0;    // requests the socket refused (not counted in sent)
  uint64_t acked_puts = 0;     // PUTs answered FKV_ST_OK
  uint64_t put_errors = 0;     // PUTs answered with an error status
  uint64_t gets_answered = 0;  // GETs answered OK or NOT_FOUND
  uint64_t get_errors = 0;     // GETs answered with an error status
  uint64_t stale_reads = 0;    // GET answers outside the allowed window (verification's included)
  uint64_t unanswered = 0;     // requests without a reply by timeout_ms after sending ended
  uint64_t bad_replies = 0;    // malformed or unmatched datagrams (size, magic, op, id, key, status)
  uint64_t late_replies = 0;   // replies to requests already counted unanswered
  // Verification.
  uint64_t lost_puts = 0;
  uint64_t unreflected_replies = 0;  // keys holding less than a GET answer had shown
  uint64_t verified_keys = 0;
  uint64_t unverifiable_keys = 0;  // keys whose verification GET was never answered
  // Timing (ms). The gap is the longest time without a valid reply while requests were
  // outstanding, within the sending phase; gap_start_ms is when it began, since the start.
  double client_gap_ms = 0;
  double gap_start_ms = 0;
  double duration_ms = 0;      // the sending phase
  double send_rate = 0;        // achieved requests per second
  double latency_p50_ms = 0;   // of answered load requests
  double latency_p99_ms = 0;
  double latency_max_ms = 0;
  double verify_ms = 0;
  std::vector<std::string> anomalies;  // the first few violations, for a human to look at
};

// Checks options without touching the network: rate > 0, keys >= 1, put_percent <= 100,
// timeout_ms >= 1, server and bind parse as numeric addresses of the same family.
Status ValidateKvLoadOptions(const KvLoadOptions& options);

Result<KvLoadResult> RunKvLoad(const KvLoadOptions& options, const std::atomic<bool>& stop);

// Empty when the run passed: no lost PUT, no stale read, every key verified (or verification
// off) and at least one PUT acknowledged. Otherwise the reasons, on one line.
std::string KvLoadFailure(const KvLoadResult& result);

// Every field of `result`, snake_case names.
nlohmann::json KvLoadResultJson(const KvLoadResult& result);

// The wire codec, field by field (little-endian) so it does not depend on host struct layout.
std::array<uint8_t, FKV_MSG_BYTES> EncodeKvMsg(const fkv_msg& msg);
// Fails unless the datagram is exactly FKV_MSG_BYTES long and starts with FKV_MAGIC.
Result<fkv_msg> DecodeKvMsg(std::span<const uint8_t> datagram);

}  // namespace ferry::cli
