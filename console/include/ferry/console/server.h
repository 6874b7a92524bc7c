// Console: `ferry console`'s web server (cpp-httplib). It serves the page (console/web, and
// chart.js from console/node_modules), GET /api/cluster (view.h, asked afresh of the agents on
// every call) and the actions POST /api/move, /api/evacuate, /api/drill, which need the
// token ("Authorization: Bearer TOKEN"). The agents and drills are reached through the
// functions given to Start(), so this library needs no VMM or Corosync code. HTTP requests
// run on the server's threads; a drill runs on its own thread, one at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/ha/config.h"

namespace ferry::console {

struct ConsoleOptions {
  std::string address = "127.0.0.1";
  int port = 8080;  // 0: any free port (port() says which)
  std::string token;       // required for actions; never empty
  std::string web_dir;     // index.html, app.js, style.css
  std::string chart_js;    // chart.js's UMD build, served as /vendor/chart.umd.js
};

// Asks host's agent (its API socket) `request`; the answer, or why there was none.
using AgentCall = std::function<Result<nlohmann::json>(const ha::HostConfig& host, const nlohmann::json& request)>;
// Runs a drill to its end and returns its scorecard (`ferry drill ... --json`).
using DrillRunner = std::function<Result<nlohmann::json>(const std::string& fault, const std::string& target)>;

class Console {
 public:
  static Result<std::unique_ptr<Console>> Start(const ha::ClusterConfig& config, ConsoleOptions options, AgentCall agent,
                                                DrillRunner drill);
  ~Console();  // Stop()
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  int port() const;
  // Blocks until Stop() (from another thread or a signal handler's thread).
  void Wait();
  void Stop();

 private:
  struct Impl;
  explicit Console(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::console
