// Peer authentication for migration connections: a shared key and an HMAC-SHA256
// challenge/response in both directions, done on every connection before any guest state is
// parsed. Without a key on either side, a destination accepts loopback peers only.
//
// Handshake (PROTOCOL.md): src Hello{nonce_s} -> dst Challenge{nonce_d, HMAC(k, "dst"|...)}
// -> src Auth{HMAC(k, "src"|...)} -> dst Welcome{session}. Each side proves the key to the
// other; a replayed transcript fails on the fresh nonces. Stateless functions.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "ferry/migrate/channel.h"

namespace ferry::migrate {

struct Key {
  std::vector<uint8_t> bytes;
};
using Session = std::array<uint8_t, kSessionBytes>;

// Reads a key file: at least 16 bytes (trailing newline ignored), readable by its owner only.
Result<Key> LoadKey(const std::string& path);

// Source side. For a data stream, `session` is the control connection's session id; returns
// the session the destination assigned.
Result<Session> AuthenticateToDestination(Channel& channel, const std::optional<Key>& key, Role role, uint32_t stream,
                                          const Session& session);

// Destination side. Returns the peer's hello once it proved the key (or, keyless, once it is
// known to be a loopback peer or `accept_remote` says any peer will do: --insecure);
// `session` goes back in the welcome.
Result<Hello> AuthenticateSource(Channel& channel, const std::optional<Key>& key, bool accept_remote, const Session& session);

Session NewSession();

}  // namespace ferry::migrate
