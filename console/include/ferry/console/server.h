// Console: `ferry console`'s web server (cpp-httplib). It serves the page (console/web, and
// chart.js from console/node_modules), GET /api/cluster (view.h, asked afresh of the agents on
// every call) and the actions POST /api/move, /api/evacuate, /api/balance, /api/drill. The
// agents and drills are reached through the functions given to Start(), so this library needs
// no VMM or Corosync code. HTTP requests run on the server's threads; a drill runs on its own
// thread, one at a time.
//
// The HTTP edge, checked on the request line and headers before any body is read:
// - Host must be a name this console serves (ServedHosts): else 421, so a page on another
//   site cannot reach it through DNS rebinding.
// - Every /api/ route needs "Authorization: Bearer TOKEN": the action token for anything, the
//   read token (if any) for GET only. Missing or wrong: 401; the read token on an action: 403.
// - A body must come with a Content-Length (411 otherwise) of at most kMaxBodyBytes (413).
// - One request per connection, of at most kMaxHeadBytes of request line and headers (431),
//   read within a deadline: a client cannot make the server hold more than that for it.
// - With a certificate (ConsoleOptions::tls_cert, tls_key) every connection is HTTPS: a TLS
//   1.2+ handshake within the same deadline, then the same checks on what it carries. A
//   connection whose handshake fails (plaintext HTTP, for one) is logged and closed.
// Refusals are JSON {"ok":false,"error":"..."}, as are the actions' own errors.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/ha/config.h"

namespace ferry::console {

inline constexpr size_t kMaxBodyBytes = 64 * 1024;  // action bodies are small JSON objects
inline constexpr size_t kMaxHeadBytes = 64 * 1024;  // request line and headers, cookies included
inline constexpr std::chrono::milliseconds kDefaultReadDeadline = std::chrono::seconds(10);
inline constexpr std::chrono::milliseconds kDefaultWriteTime = std::chrono::seconds(30);

struct ConsoleOptions {
  std::string address = "127.0.0.1";
  int port = 8080;  // 0: any free port (port() says which)
  std::string token;       // reads and actions; never empty
  std::string read_token;  // reads only (GET /api/cluster); empty: none. Must differ from token
  // Host names the console also answers to, beyond its address (and localhost, 127.0.0.1 and
  // [::1] when it listens on loopback or on every address): "NAME" (at the console's port) or
  // "NAME:PORT" (behind a proxy that keeps the Host it was asked for).
  std::vector<std::string> server_names;
  std::string web_dir;     // index.html, app.js, style.css
  std::string chart_js;    // chart.js's UMD build, served as /vendor/chart.umd.js
  // HTTPS: a PEM certificate (its chain may follow it) and its unencrypted PEM private key,
  // both or neither (neither: plain HTTP). Loaded and checked by Start(), before it listens.
  std::string tls_cert;
  std::string tls_key;
  // A connection's TLS handshake and its request, together, within this (tests shorten it).
  std::chrono::milliseconds read_deadline = kDefaultReadDeadline;
  // An answer is sent within this of its first byte, or the connection is cut (a client that
  // reads it slower holds a server thread no longer; tests shorten it).
  std::chrono::milliseconds write_time = kDefaultWriteTime;
};

// Asks host's agent (its API socket) `request`; the answer, or why there was none.
using AgentCall = std::function<Result<nlohmann::json>(const ha::HostConfig& host, const nlohmann::json& request)>;
// Runs a drill to its end and returns its scorecard (`ferry drill ... --json`).
using DrillRunner = std::function<Result<nlohmann::json>(const std::string& fault, const std::string& target)>;

class Console {
 public:
  // `config` must outlive the Console.
  static Result<std::unique_ptr<Console>> Start(const ha::ClusterConfig& config, ConsoleOptions options, AgentCall agent,
                                                DrillRunner drill);
  ~Console();  // Stop()
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  int port() const;
  // Whether it serves HTTPS (ConsoleOptions::tls_cert) rather than HTTP.
  bool tls() const;
  // The Host header values accepted ("name:port", lower case), known once listening.
  std::vector<std::string> ServedHosts() const;
  // Blocks until Stop() (from another thread or a signal handler's thread).
  void Wait();
  void Stop();

 private:
  struct Impl;
  explicit Console(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::console
