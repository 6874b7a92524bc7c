// ApiServer: a JSON control API on a unix socket, one JSON object per line each way. The
// VM host serves its VM's API with it; the HA agent serves its own.
//
// Resources stay flat whatever clients do: one Boost.Asio thread does all socket I/O
// (accept, reads, writes), handlers run on two fixed pools (a small one for "status", so a
// long snapshot or migration never delays a status query, and one for the rest), at most
// kMaxConnections connections are open at once (more are told so and closed), a request line
// is at most 1 MiB, a client that does not read its replies is cut off after the write
// timeout, and progress lines queued for a slow reader are dropped past 1 MiB. Each
// connection serves its requests in order, one at a time.
//
// The handler must be thread-safe and should not throw; if it does, the client gets an
// "internal" error and the server goes on. Stop() (or the destructor) refuses new work,
// lets running handlers finish and their replies go out (bounded by the write timeout),
// closes every connection, joins every thread and unlinks the path.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::vmhost {

// A long request (migrate) may send interim lines through `emit` before its final response;
// `emit` is thread-safe and never blocks.
using ApiEmit = std::function<void(const nlohmann::json& line)>;
using ApiHandler = std::function<nlohmann::json(const nlohmann::json& request, const ApiEmit& emit)>;

struct ApiServerOptions {
  size_t workers = 8;             // handlers other than status running at once
  size_t max_connections = 256;
  uint64_t write_timeout_ms = 10000;
};

// Counters, for tests and the soak bench.
struct ApiServerStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;     // over max_connections
  uint64_t requests = 0;
  uint64_t write_timeouts = 0;
  uint64_t open = 0;        // connections open now
};

class ApiServer {
 public:
  // Binds `path` (owner-only). A live socket at the path (another process answers) is an
  // error; a stale one is replaced; anything else at the path is refused.
  static Result<std::unique_ptr<ApiServer>> Start(const std::string& path, ApiHandler handler,
                                                  ApiServerOptions options = {});
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  void Stop();
  const std::string& path() const;
  ApiServerStats stats() const;

  class Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The error reply every API uses: {"ok":false,"error":MESSAGE,"code":NAME}.
nlohmann::json ErrorReply(const Status& status);

}  // namespace ferry::vmhost
