// corosync.conf from a CorosyncSpec: validation and rendering (corosync_conf.h). The file
// writers are in corosync_files.cc.
#include <arpa/inet.h>

#include <set>
#include <sstream>

#include "ferry/ha/corosync_conf.h"

namespace ferry::ha {
namespace {

// Names, node names and cluster names go into corosync.conf unquoted: keep them to a charset
// its parser cannot misread (no spaces, braces, colons or '#').
bool PlainWord(const std::string& s, size_t max_len) {
  if (s.empty() || s.size() > max_len) return false;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '_' || ch == '.';
    if (!ok) return false;
  }
  return true;
}

// AF_INET or AF_INET6 for an address literal, 0 if it is neither.
int AddressFamily(const std::string& addr) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, addr.c_str(), buf) == 1) return AF_INET;
  if (inet_pton(AF_INET6, addr.c_str(), buf) == 1) return AF_INET6;
  return 0;
}

Status CheckRange(const char* field, int value, int lo, int hi) {
  if (value >= lo && value <= hi) return Status::Ok();
  return InvalidArgument(std::string("corosync: ") + field + " is " + std::to_string(value) + ", must be " +
                         std::to_string(lo) + ".." + std::to_string(hi));
}

// The token totem really uses: corosync adds token_coefficient per node past two.
int EffectiveTokenMs(const CorosyncSpec& s) {
  const int extra_nodes = static_cast<int>(s.nodes.size()) > 2 ? static_cast<int>(s.nodes.size()) - 2 : 0;
  return s.token_ms + extra_nodes * s.token_coefficient_ms;
}

Status ValidateNodes(const std::vector<CorosyncNode>& nodes) {
  if (nodes.empty()) return InvalidArgument("corosync: the nodelist is empty");
  std::set<std::string> names, addrs;
  std::set<uint32_t> ids;
  int family = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const CorosyncNode& n = nodes[i];
    const std::string where = "corosync: node " + std::to_string(i) + (n.name.empty() ? "" : " (" + n.name + ")");
    if (!PlainWord(n.name, 64)) {
      return InvalidArgument(where + ": the name must be 1..64 letters, digits, '-', '_' or '.'");
    }
    if (n.nodeid < 1 || n.nodeid > 65535) {
      return InvalidArgument(where + ": nodeid " + std::to_string(n.nodeid) + " is out of range 1..65535 (knet)");
    }
    const int f = AddressFamily(n.ring0_addr);
    if (f == 0) return InvalidArgument(where + ": ring0_addr \"" + n.ring0_addr + "\" is not an IPv4 or IPv6 address");
    if (family != 0 && f != family) {
      return InvalidArgument(where + ": ring0_addr " + n.ring0_addr +
                             " mixes IPv4 and IPv6 on link 0 (knet needs one family per link)");
    }
    family = f;
    if (!names.insert(n.name).second) return InvalidArgument("corosync: node name " + n.name + " is used twice");
    if (!ids.insert(n.nodeid).second) {
      return InvalidArgument("corosync: nodeid " + std::to_string(n.nodeid) + " is used twice");
    }
    if (!addrs.insert(n.ring0_addr).second) {
      return InvalidArgument("corosync: ring0_addr " + n.ring0_addr + " is used twice");
    }
  }
  return Status::Ok();
}

Status ValidateCrypto(const CorosyncSpec& s) {
  if ((s.cipher == CorosyncCipher::kNone || s.hash == CorosyncHash::kNone) && !s.allow_no_crypto) {
    return InvalidArgument("corosync: crypto_cipher " + std::string(CorosyncCipherName(s.cipher)) + " / crypto_hash " +
                           CorosyncHashName(s.hash) +
                           ": turning Corosync's encryption or authentication off needs allow_no_crypto "
                           "(ferry ha corosync-conf --insecure-no-crypto)");
  }
  if (s.cipher != CorosyncCipher::kNone && s.hash == CorosyncHash::kNone) {
    return InvalidArgument("corosync: crypto_cipher " + std::string(CorosyncCipherName(s.cipher)) +
                           " needs a crypto_hash other than none");
  }
  if (s.hash == CorosyncHash::kNone) return Status::Ok();  // no key is used
  if (s.keyfile.empty() || s.keyfile[0] != '/') {
    return InvalidArgument("corosync: keyfile \"" + s.keyfile + "\" must be an absolute path");
  }
  for (char ch : s.keyfile) {
    if (static_cast<unsigned char>(ch) <= ' ' || ch == '{' || ch == '}' || ch == '#' || ch == 0x7f) {
      return InvalidArgument("corosync: keyfile \"" + s.keyfile + "\" has a space, control character, brace or '#'");
    }
  }
  return Status::Ok();
}

std::vector<std::string> CryptoWarnings(const CorosyncSpec& s) {
  std::vector<std::string> w;
  if (s.hash == CorosyncHash::kNone) {
    w.push_back("crypto_hash is none: Corosync traffic is not authenticated; anyone who reaches ring0 can join the "
                "cluster or forge its membership");
  }
  if (s.cipher == CorosyncCipher::kNone) {
    w.push_back("crypto_cipher is none: Corosync traffic (membership, the HA agents' messages) travels in the clear");
  }
  return w;
}

}  // namespace

const char* CorosyncCipherName(CorosyncCipher c) {
  switch (c) {
    case CorosyncCipher::kNone: return "none";
    case CorosyncCipher::kAes128: return "aes128";
    case CorosyncCipher::kAes192: return "aes192";
    case CorosyncCipher::kAes256: return "aes256";
  }
  return "none";
}

const char* CorosyncHashName(CorosyncHash h) {
  switch (h) {
    case CorosyncHash::kNone: return "none";
    case CorosyncHash::kSha256: return "sha256";
    case CorosyncHash::kSha384: return "sha384";
    case CorosyncHash::kSha512: return "sha512";
  }
  return "none";
}

bool ParseCorosyncCipher(const std::string& name, CorosyncCipher* out) {
  for (CorosyncCipher c : {CorosyncCipher::kNone, CorosyncCipher::kAes128, CorosyncCipher::kAes192,
                           CorosyncCipher::kAes256}) {
    if (name == CorosyncCipherName(c)) {
      *out = c;
      return true;
    }
  }
  return false;
}

bool ParseCorosyncHash(const std::string& name, CorosyncHash* out) {
  for (CorosyncHash h : {CorosyncHash::kNone, CorosyncHash::kSha256, CorosyncHash::kSha384, CorosyncHash::kSha512}) {
    if (name == CorosyncHashName(h)) {
      *out = h;
      return true;
    }
  }
  return false;
}

Status ValidateCorosyncSpec(const CorosyncSpec& s) {
  if (!PlainWord(s.cluster_name, 64)) {
    return InvalidArgument("corosync: cluster_name \"" + s.cluster_name +
                           "\" must be 1..64 letters, digits, '-', '_' or '.'");
  }
  FERRY_RETURN_IF_ERROR(ValidateNodes(s.nodes));
  FERRY_RETURN_IF_ERROR(CheckRange("token", s.token_ms, 100, 60000));
  FERRY_RETURN_IF_ERROR(CheckRange("token_coefficient", s.token_coefficient_ms, 0, 10000));
  if (s.consensus_ms != 0) {
    const int token = EffectiveTokenMs(s);
    // Corosync refuses a consensus under 1.2 * the effective token.
    if (s.consensus_ms > 600000 || static_cast<int64_t>(s.consensus_ms) * 5 < static_cast<int64_t>(token) * 6) {
      return InvalidArgument("corosync: consensus is " + std::to_string(s.consensus_ms) + ", must be 0 (1.2 * token) or " +
                             std::to_string((token * 6 + 4) / 5) + "..600000 (at least 1.2 * the token of " +
                             std::to_string(token) + " ms)");
    }
  }
  if ((s.knet_ping_interval_ms == 0) != (s.knet_ping_timeout_ms == 0)) {
    return InvalidArgument("corosync: knet_ping_interval and knet_ping_timeout go together (both 0: knet derives them "
                           "from the token)");
  }
  if (s.knet_ping_timeout_ms != 0) {
    FERRY_RETURN_IF_ERROR(CheckRange("knet_ping_interval", s.knet_ping_interval_ms, 1, 60000));
    FERRY_RETURN_IF_ERROR(CheckRange("knet_ping_timeout", s.knet_ping_timeout_ms, s.knet_ping_interval_ms + 1, 120000));
  }
  return ValidateCrypto(s);
}

Result<RenderedCorosyncConf> RenderCorosyncConf(const CorosyncSpec& s) {
  FERRY_RETURN_IF_ERROR(ValidateCorosyncSpec(s));
  RenderedCorosyncConf r;
  r.warnings = CryptoWarnings(s);
  std::ostringstream c;
  c << "# corosync.conf for the Ferry cluster " << s.cluster_name << ", written by ferry.\n"
    << "# Every host runs this same file";
  if (s.hash != CorosyncHash::kNone) c << " and holds the same authkey (" << s.keyfile << ")";
  c << ".\n";
  for (const auto& w : r.warnings) c << "# WARNING: " << w << "\n";
  c << "totem {\n"
    << "  version: 2\n"
    << "  cluster_name: " << s.cluster_name << "\n"
    << "  transport: knet\n"
    << "  crypto_cipher: " << CorosyncCipherName(s.cipher) << "\n"
    << "  crypto_hash: " << CorosyncHashName(s.hash) << "\n";
  if (s.hash != CorosyncHash::kNone) c << "  keyfile: " << s.keyfile << "\n";
  c << "  token: " << s.token_ms << "\n"
    << "  token_coefficient: " << s.token_coefficient_ms << "\n";
  if (s.consensus_ms != 0) c << "  consensus: " << s.consensus_ms << "\n";
  c << "  interface {\n"
    << "    linknumber: 0\n";
  if (s.knet_ping_timeout_ms != 0) {
    c << "    knet_ping_interval: " << s.knet_ping_interval_ms << "\n"
      << "    knet_ping_timeout: " << s.knet_ping_timeout_ms << "\n";
  }
  c << "  }\n"
    << "}\n"
    << "nodelist {\n";
  // Corosync's parser wants `node {` to end its line and each key on a line of its own.
  for (const CorosyncNode& n : s.nodes) {
    c << "  node {\n"
      << "    nodeid: " << n.nodeid << "\n"
      << "    name: " << n.name << "\n"
      << "    ring0_addr: " << n.ring0_addr << "\n"
      << "  }\n";
  }
  const bool to_stderr = s.log == CorosyncLog::kStderr;
  c << "}\n"
    << "quorum {\n"
    << "  provider: corosync_votequorum\n"
    << "}\n"
    << "logging {\n"
    << "  to_stderr: " << (to_stderr ? "yes" : "no") << "\n"
    << "  to_logfile: no\n"
    << "  to_syslog: " << (to_stderr ? "no" : "yes") << "\n"
    << "  timestamp: " << (to_stderr ? "hires" : "off") << "\n"
    << "}\n";
  r.text = c.str();
  return r;
}

}  // namespace ferry::ha
