// Corosync's configuration for a Ferry cluster: corosync.conf rendered from a typed spec, and
// the shared authkey. Every host runs the same corosync.conf and holds the same authkey;
// knet encrypts (aes256 by default) and authenticates (sha256) every Totem packet with it, so
// a host without the key can neither join nor read the membership traffic. Turning crypto off
// takes an explicit `allow_no_crypto`, and the result then carries a warning (also written
// into the file). The test clusters (tests/test_cluster.cc) render their config here too, so
// tests run what users run.
//
// Pure functions plus two file writers; nothing is shared, any thread may call them. Errors are
// values (InvalidArgument for a bad spec, naming the field; Io for the file system); nothing
// throws.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ferry/base/status.h"

namespace ferry::ha {

enum class CorosyncCipher { kNone, kAes128, kAes192, kAes256 };
enum class CorosyncHash { kNone, kSha256, kSha384, kSha512 };
// Where corosync logs: syslog on a real host; stderr for a corosync run in the foreground
// (test clusters capture it).
enum class CorosyncLog { kSyslog, kStderr };

// corosync.conf's names ("aes256", "sha256", "none") and their parses (false: unknown name).
const char* CorosyncCipherName(CorosyncCipher c);
const char* CorosyncHashName(CorosyncHash h);
bool ParseCorosyncCipher(const std::string& name, CorosyncCipher* out);
bool ParseCorosyncHash(const std::string& name, CorosyncHash* out);

struct CorosyncNode {
  uint32_t nodeid = 0;     // 1..65535 (knet's host ids are 16-bit)
  std::string name;        // letters, digits, '-', '_', '.'
  std::string ring0_addr;  // an IPv4 or IPv6 address literal
};

struct CorosyncSpec {
  std::string cluster_name;  // 1..64 of letters, digits, '-', '_', '.'
  std::vector<CorosyncNode> nodes;
  // Token loss declares a node failed. Corosync's own default is 3000 ms; Ferry's failover
  // time starts with it, hence 1000 (measured stable on a quiet LAN).
  int token_ms = 1000;                // 100..60000
  int token_coefficient_ms = 650;     // per node past 2, added to the token; 0..10000
  int consensus_ms = 0;               // 0: corosync's 1.2 * token; else at least that
  // knet's link liveness: a pair (0 and 0: knet derives both from the token).
  int knet_ping_interval_ms = 0;
  int knet_ping_timeout_ms = 0;
  std::string keyfile = "/etc/corosync/authkey";  // absolute path, where every host keeps the key
  CorosyncCipher cipher = CorosyncCipher::kAes256;
  CorosyncHash hash = CorosyncHash::kSha256;
  // The only way to render cipher or hash none: the cluster's membership traffic then travels
  // unauthenticated (anyone on the network can join or forge it) and in the clear.
  bool allow_no_crypto = false;
  CorosyncLog log = CorosyncLog::kSyslog;
};

struct RenderedCorosyncConf {
  std::string text;                   // the whole corosync.conf
  std::vector<std::string> warnings;  // for the operator (e.g. crypto off)
};

// Checks every field: a bad one is InvalidArgument naming it and the accepted range.
[[nodiscard]] Status ValidateCorosyncSpec(const CorosyncSpec& spec);

// Validates, then renders corosync.conf (totem with knet, crypto and timers; the nodelist;
// votequorum; logging).
Result<RenderedCorosyncConf> RenderCorosyncConf(const CorosyncSpec& spec);

inline constexpr size_t kCorosyncAuthkeyBytes = 256;  // corosync-keygen's default size

struct AuthkeyOptions {
  bool overwrite = false;  // replace an existing key (every host then needs the new one)
  uint32_t mode = 0400;    // 0400 or 0600: never readable by others
};

// Writes kCorosyncAuthkeyBytes fresh random bytes (getrandom) to `path`, atomically: a temporary
// file in the same directory, created with `mode`, written and fsynced, then linked into place
// (refused with Refused if `path` exists, unless overwrite, which renames over it); the
// directory is fsynced. A failure leaves no temporary file and `path` as it was.
[[nodiscard]] Status WriteCorosyncAuthkey(const std::string& path, const AuthkeyOptions& options = {});

// Checks an existing authkey before it is kept: a regular file of 128..4096 bytes (corosync's
// bounds) that neither group nor others may read.
[[nodiscard]] Status CheckCorosyncAuthkey(const std::string& path);

// Writes `text` to `path` atomically (temporary file, fsync, rename), mode 0644: corosync.conf
// holds no secret.
[[nodiscard]] Status WriteCorosyncConf(const std::string& path, const std::string& text);

}  // namespace ferry::ha
