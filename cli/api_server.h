// ApiServer: the VM's JSON control API on a unix socket (one JSON object per line in each
// direction). The CLI, tests and (later) the HA agent talk to a running VMM through it.
//
// Accepts on its own thread with Boost.Asio; each connection is served on a thread of its own
// so a long request (snapshot, verify) never blocks status queries. The handler must be
// thread-safe. Stop() closes the socket, unlinks the path and joins every thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::cli {

// A long request (migrate) may send interim lines through `emit` before its final response;
// `emit` is thread-safe.
using ApiEmit = std::function<void(const nlohmann::json& line)>;
using ApiHandler = std::function<nlohmann::json(const nlohmann::json& request, const ApiEmit& emit)>;

class ApiServer {
 public:
  // Binds `path`. A live socket at the path (another VMM answers) is an error; a stale one
  // is replaced.
  static Result<std::unique_ptr<ApiServer>> Start(const std::string& path, ApiHandler handler);
  ~ApiServer();
  void Stop();
  const std::string& path() const { return path_; }

 private:
  ApiServer(std::string path, ApiHandler handler);
  void AcceptLoop();
  void Serve(std::shared_ptr<boost::asio::local::stream_protocol::socket> socket);

  std::string path_;
  ApiHandler handler_;
  boost::asio::io_context io_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;                                  // guards the two vectors below
  std::vector<std::thread> connection_threads_;
  std::vector<std::weak_ptr<boost::asio::local::stream_protocol::socket>> sockets_;
};

}  // namespace ferry::cli
