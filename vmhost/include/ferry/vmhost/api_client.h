// The VMM's JSON API from the client side, on a unix socket: CallApi() makes one exchange on
// a connection of its own (thread-safe); ApiConnection keeps one connection for many
// exchanges (a poller's: one socket per VMM, not one per call). Blocking, with deadlines.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::vmhost {

// Sends `request` to the VMM at `socket_path` and returns its response. A response with
// "ok": false becomes an error carrying the VMM's message and its "code" (ErrorCodeName). Interim lines (objects with a
// "progress" member, sent by long operations) go to `on_progress` and restart the timeout,
// which then bounds silence rather than the whole call.
using ProgressLineFn = std::function<void(const nlohmann::json& line)>;
Result<nlohmann::json> CallApi(const std::string& socket_path, const nlohmann::json& request, int timeout_ms = 30000,
                               const ProgressLineFn& on_progress = {});

// The pid of the process listening on socket_path (its peer credentials, read from a
// connection it need not accept): a VMM that takes connections but answers nothing. One whose
// backlog is full takes no connection: it is found by its socket's inode (/proc/net/unix,
// /proc/PID/fd), if one process alone holds it, or else by a command line serving
// socket_path as a VMM's does (`run` or `standby`, then `--api socket_path`), if one alone.
Result<pid_t> ListenerPid(const std::string& socket_path);

// One persistent connection to a VMM's API. Call() connects on first use and after any
// failure (the connection is dropped whenever an exchange fails or times out, so a late
// answer can never be read as the next call's). Not thread-safe: one owner thread.
class ApiConnection {
 public:
  explicit ApiConnection(std::string socket_path) : path_(std::move(socket_path)) {}
  ~ApiConnection();
  ApiConnection(const ApiConnection&) = delete;
  ApiConnection& operator=(const ApiConnection&) = delete;

  Result<nlohmann::json> Call(const nlohmann::json& request, int timeout_ms);
  bool connected() const { return fd_.valid(); }
  uint64_t connects() const { return connects_; }  // connections opened so far
  void Close();

  // Call() in two halves, for a poller that asks many VMMs at once from one thread and never
  // waits on one (the HA agent's probe): Send() connects if need be and sends the request;
  // once fd() is readable, Receive() reads what is there and returns the response once it is
  // whole (nullopt until then). Any failure closes the connection, as does the caller on its
  // own deadline (Close()), so a late answer is never read as the next request's.
  Status Send(const nlohmann::json& request);
  std::optional<Result<nlohmann::json>> Receive();
  int fd() const { return fd_.get(); }

 private:
  std::string path_;
  UniqueFd fd_;
  std::string in_;  // a response read in part (Receive)
  uint64_t connects_ = 0;
};

}  // namespace ferry::vmhost
