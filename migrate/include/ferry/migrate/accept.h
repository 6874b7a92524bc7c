// Opening and accepting authenticated protocol connections: what migration (sender,
// receiver) and replication (primary, standby) share. Each connection authenticates on its
// own (auth.h) before anything else is read from it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ferry/migrate/auth.h"
#include "ferry/migrate/channel.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

// Connects (tcp or rdma) and authenticates as `role`; for a data stream, `session` is the
// control connection's. Returns the channel, its I/O timeout set; *assigned gets the session
// the peer assigned.
Result<std::unique_ptr<Channel>> ConnectPeer(const Endpoint& to, const std::string& transport,
                                             const std::optional<Key>& key, uint64_t io_timeout_ms, Role role,
                                             uint32_t stream, const Session& session, Session* assigned);

struct AcceptedPeer {
  std::unique_ptr<Channel> channel;
  Hello hello;
};

// Waits up to `timeout_ms` (0: forever) for a peer that proves the key and asks for `role`
// (a data stream must carry `session`). Strangers are refused (told why, counted in
// *refused, logged to stderr under `who`) and the wait goes on.
Result<AcceptedPeer> AcceptPeer(Listener& listener, const std::optional<Key>& key, const Session& session, Role role,
                                uint64_t timeout_ms, uint64_t io_timeout_ms, const std::string& who,
                                uint32_t* refused);

}  // namespace ferry::migrate
