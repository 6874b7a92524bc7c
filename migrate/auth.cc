#include "ferry/migrate/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace ferry::migrate {
namespace {

using Mac = std::array<uint8_t, kMacBytes>;
using Nonce = std::array<uint8_t, kNonceBytes>;

template <size_t N>
std::array<uint8_t, N> RandomBytes() {
  std::array<uint8_t, N> out{};
  if (RAND_bytes(out.data(), N) != 1) std::abort();  // no entropy: nothing safe to do
  return out;
}

// HMAC over a role label and both nonces (the prover's peer's nonce first), plus the stream,
// so a proof for one role or stream is useless for another.
Mac Prove(const Key& key, const char* label, const Nonce& first, const Nonce& second, Role role, uint32_t stream) {
  std::vector<uint8_t> msg(label, label + std::strlen(label));
  msg.insert(msg.end(), first.begin(), first.end());
  msg.insert(msg.end(), second.begin(), second.end());
  msg.push_back(static_cast<uint8_t>(role));
  for (int i = 0; i < 4; ++i) msg.push_back(static_cast<uint8_t>(stream >> (8 * i)));
  Mac mac{};
  unsigned len = 0;
  HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()), msg.data(), msg.size(), mac.data(), &len);
  return mac;
}

bool Equal(const Mac& a, const Mac& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

constexpr const char* kDstLabel = "ferry-migrate-v1 destination";
constexpr const char* kSrcLabel = "ferry-migrate-v1 source";

}  // namespace

Session NewSession() { return RandomBytes<kSessionBytes>(); }

Result<Key> LoadKey(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("key file " + path);
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    return InvalidArgument("key file " + path + " is accessible by group or others; chmod 600 it");
  }
  std::ifstream in(path, std::ios::binary);
  Key key{std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {})};
  while (!key.bytes.empty() && (key.bytes.back() == '\n' || key.bytes.back() == '\r')) key.bytes.pop_back();
  if (key.bytes.size() < 16) return InvalidArgument("key file " + path + " holds fewer than 16 bytes");
  if (key.bytes.size() > 4096) return InvalidArgument("key file " + path + " is larger than 4 KiB");
  return key;
}

Result<Session> AuthenticateToDestination(Channel& ch, const std::optional<Key>& key, Role role, uint32_t stream,
                                          const Session& session) {
  Hello hello;
  hello.role = role;
  hello.stream = stream;
  hello.have_key = key.has_value();
  hello.nonce = RandomBytes<kNonceBytes>();
  hello.session = session;
  FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kHello, EncodeHello(hello)));
  Frame f;
  FERRY_RETURN_IF_ERROR(ch.Expect(MsgType::kChallenge, &f));
  FERRY_ASSIGN_OR_RETURN(Challenge c, DecodeChallenge(f.payload));
  std::string peer = ch.connection().PeerAddress();
  if (key && !c.have_key) {
    ch.Fail("this source has a key and refuses an unauthenticated destination");
    return Status(ErrorCode::kAborted, "authentication failed: the destination " + peer + " has no --key");
  }
  Mac proof{};
  if (key) {
    if (!Equal(c.mac, Prove(*key, kDstLabel, hello.nonce, c.nonce, role, stream))) {
      ch.Fail("authentication failed: the destination's key proof does not match");
      return Status(ErrorCode::kAborted, "authentication failed: the destination " + peer + " does not hold our key");
    }
    proof = Prove(*key, kSrcLabel, c.nonce, hello.nonce, role, stream);
  }
  FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kAuth, proof));
  FERRY_RETURN_IF_ERROR(ch.Expect(MsgType::kWelcome, &f));
  return DecodeSession(f.payload);
}

Result<Hello> AuthenticateSource(Channel& ch, const std::optional<Key>& key, bool accept_remote, const Session& session) {
  std::string peer = ch.connection().PeerAddress();
  Frame f;
  FERRY_RETURN_IF_ERROR(ch.Expect(MsgType::kHello, &f));
  FERRY_ASSIGN_OR_RETURN(Hello hello, DecodeHello(f.payload));
  auto refuse = [&](const std::string& why) {
    ch.Fail(why);
    return Status(ErrorCode::kAborted, "refused " + peer + ": " + why);
  };
  if (!key && !accept_remote && !ch.connection().PeerIsLoopback()) {
    return refuse("this destination has no --key (nor certificates) and accepts loopback peers only");
  }
  if (key && !hello.have_key) return refuse("authentication required: this destination has a --key and the source has none");
  if (!key && hello.have_key) return refuse("this destination has no --key; give both ends the same key");
  Challenge c;
  c.have_key = key.has_value();
  c.nonce = RandomBytes<kNonceBytes>();
  if (key) c.mac = Prove(*key, kDstLabel, hello.nonce, c.nonce, hello.role, hello.stream);
  FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kChallenge, EncodeChallenge(c)));
  Status st = ch.Expect(MsgType::kAuth, &f);
  if (!st.ok()) return Status(st.code(), "refused " + peer + ": " + st.message());
  FERRY_ASSIGN_OR_RETURN(Mac mac, DecodeMac(f.payload));
  if (key && !Equal(mac, Prove(*key, kSrcLabel, c.nonce, hello.nonce, hello.role, hello.stream))) {
    return refuse("authentication failed: the source does not hold our key");
  }
  FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kWelcome, session));
  return hello;
}

}  // namespace ferry::migrate
