#include "ferry/console/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

#include "capped_stream.h"
#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/base/unique_fd.h"
#include "ferry/console/view.h"
#include "ferry/ha/json_fields.h"
#include "tls.h"

namespace ferry::console {

using nlohmann::json;

namespace {

// Whether an agent's status answer says its partition is quorate; false for an answer of any
// other shape (an agent of another version, a broken one), never an exception.
bool Quorate(const json& status) { return ha::BoolField(ha::Field(status, "cluster"), "quorate"); }

// cpp-httplib's Server, one request per connection through a CappedStream, over the socket
// as it is or (with a TlsServer) over a TLS session on it. Its own loop keeps a connection
// for further requests, and reads a refused request's unread body as the next request line.
class HttpServer final : public httplib::Server {
 public:
  // Both set before the server starts, read-only after.
  void Configure(std::unique_ptr<TlsServer> tls, std::chrono::milliseconds read_deadline,
                 std::chrono::milliseconds write_time) {
    tls_ = std::move(tls);
    read_deadline_ = read_deadline;
    write_time_ = write_time;
  }
  bool tls() const { return tls_ != nullptr; }

 private:
  // Runs on cpp-httplib's pool threads, which an exception would end with the process.
  bool process_and_close_socket(socket_t sock) override {
    UniqueFd fd(sock);
    try {
      return Serve(sock);
    } catch (const std::exception& e) {
      FERRY_LOG_ERROR("console: serving %s failed: %s; connection closed", PeerName(sock).c_str(), e.what());
    } catch (...) {
      FERRY_LOG_ERROR("console: serving %s failed; connection closed", PeerName(sock).c_str());
    }
    ::shutdown(sock, SHUT_RDWR);
    return false;
  }

  // The handshake (under TLS) and the request share one deadline: a client that is silent or
  // slow at either holds a thread for that long at most.
  bool Serve(int sock) {
    const Deadline deadline = std::chrono::steady_clock::now() + read_deadline_;
    if (!tls_) {
      PlainWire wire(sock);
      return ServeOn(wire, deadline);
    }
    auto wire = tls_->Handshake(sock, deadline);
    if (!wire.ok()) {
      FERRY_LOG_WARN("console: TLS connection from %s refused: %s", PeerName(sock).c_str(),
                     wire.status().message().c_str());
      ::shutdown(sock, SHUT_RDWR);
      return false;
    }
    return ServeOn(**wire, deadline);
  }

  bool ServeOn(Wire& wire, Deadline deadline) {
    CappedStream stream(wire, kMaxHeadBytes + kMaxBodyBytes, deadline, write_time_);
    bool connection_closed = false;
    const bool ok = process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
    // The body is checked against its Content-Length before it is read, so a request that
    // ran out of budget was refused for its line and headers.
    if (!ok && stream.over_budget() && !stream.wrote()) {
      const std::string body = R"({"ok":false,"error":"the request line and headers exceed )" +
                               std::to_string(kMaxHeadBytes / 1024) + R"( KiB"})";
      stream.write_format("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          body.size());
      stream.write(body);
    }
    wire.Finish();
    ::shutdown(wire.fd(), SHUT_RDWR);
    return ok;
  }

  std::unique_ptr<TlsServer> tls_;  // null: plaintext HTTP
  std::chrono::milliseconds read_deadline_{kDefaultReadDeadline};
  std::chrono::milliseconds write_time_{kDefaultWriteTime};
};

// Compared in a time that depends on the length of what was sent, never on where it differs.
bool SameSecret(std::string_view given, std::string_view secret) {
  if (secret.empty()) return false;
  volatile unsigned char diff = given.size() != secret.size();
  for (size_t i = 0; i < given.size(); ++i) diff = diff | (given[i] ^ secret[i % secret.size()]);
  return diff == 0;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "name:port" as a Host header carries it (an IPv6 address in brackets).
std::string Authority(const std::string& name, int port) {
  const bool ipv6 = name.find(':') != std::string::npos && !name.starts_with('[');
  return Lower(ipv6 ? "[" + name + "]" : name) + ":" + std::to_string(port);
}

bool IsLoopbackOrAny(const std::string& address) {
  return address.starts_with("127.") || address == "::1" || address == "localhost" || address == "0.0.0.0" ||
         address == "::";
}

// `tls`: whether the console serves https (default port 443) or http (80).
std::set<std::string> HostNames(const ConsoleOptions& o, int port, bool tls) {
  std::set<std::string> out;
  const std::string default_port = tls ? ":443" : ":80";
  auto add = [&out, &default_port](const std::string& authority) {
    out.insert(authority);
    if (authority.ends_with(default_port)) {
      out.insert(authority.substr(0, authority.size() - default_port.size()));  // browsers omit it
    }
  };
  add(Authority(o.address, port));
  if (IsLoopbackOrAny(o.address)) {
    for (const char* name : {"localhost", "127.0.0.1", "::1"}) add(Authority(name, port));
  }
  for (const std::string& name : o.server_names) {
    const bool has_port = name.starts_with('[') ? name.find("]:") != std::string::npos : name.find(':') != std::string::npos;
    add(has_port ? Lower(name) : Authority(name, port));
  }
  return out;
}

bool ValidServerName(const std::string& name) {
  if (name.empty() || name.size() > 260) return false;
  if (name.find(':') != name.rfind(':') && !name.starts_with('[')) return false;  // bare IPv6: ambiguous
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
  });
}

enum class Access { kNone, kRead, kAct };

struct Refusal {
  int status;
  std::string error;
};

void Reply(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");  // a peer's bytes (Host) may not be UTF-8
}

void Refuse(httplib::Response& res, const Refusal& r) {
  Reply(res, {{"ok", false}, {"error", r.error}}, r.status);
  if (r.status == 401) res.set_header("WWW-Authenticate", "Bearer");
}

// For the errors cpp-httplib answers itself, with an empty body.
std::string ErrorText(int status) {
  switch (status) {
    case 400: return "the request is malformed, or its headers exceed " + std::to_string(kMaxHeadBytes / 1024) + " KiB";
    case 404: return "no such page";
    case 413: return "the body is larger than " + std::to_string(kMaxBodyBytes / 1024) + " KiB";
    case 414: return "the URI is too long";
    default: return "HTTP " + std::to_string(status);
  }
}

const char* ContentType(const std::string& path) {
  if (path.ends_with(".html")) return "text/html; charset=utf-8";
  if (path.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (path.ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace

struct Console::Impl {
  const ha::ClusterConfig& config;
  ConsoleOptions o;
  AgentCall agent;
  DrillRunner drill;
  HttpServer http;
  std::thread thread;
  std::atomic<bool> listen_returned = false;
  int port = 0;
  std::set<std::string> served_hosts;  // the Host values accepted; set before the server starts

  std::mutex mu;  // guards the drill state below
  bool drill_running = false;
  json drill_scorecard = nullptr;
  std::string drill_error;
  std::vector<json> drills;  // finished, for the history
  std::thread drill_thread;

  Impl(const ha::ClusterConfig& c, ConsoleOptions opts, AgentCall a, DrillRunner d)
      : config(c), o(std::move(opts)), agent(std::move(a)), drill(std::move(d)) {}

  Access Authorize(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (!header.starts_with(kBearer)) return Access::kNone;
    const std::string_view given = std::string_view(header).substr(kBearer.size());
    if (SameSecret(given, o.token)) return Access::kAct;
    if (SameSecret(given, o.read_token)) return Access::kRead;
    return Access::kNone;
  }

  // Why a request is refused on its line and headers alone, before any of its body is read;
  // nothing when it may go on. Runs on the server's threads; reads only what Start() set.
  std::optional<Refusal> Admit(const httplib::Request& req) const {
    const std::string host = Lower(req.get_header_value("Host"));
    if (!served_hosts.contains(host)) {
      std::string names;
      for (const auto& n : served_hosts) names += (names.empty() ? "" : ", ") + n;
      return Refusal{421, "this console does not answer to Host \"" + host.substr(0, 100) + "\" (it answers to " + names +
                              "; ferry console --server-name adds a name)"};
    }
    if (req.path == "/api" || req.path.starts_with("/api/")) {
      const Access access = Authorize(req);
      if (access == Access::kNone) {
        return Refusal{401, "this needs the console's token (Authorization: Bearer TOKEN): open the page with "
                            "?token=TOKEN or paste the token at the top right"};
      }
      if (access == Access::kRead && req.method != "GET" && req.method != "HEAD") {
        return Refusal{403, "the read-only token cannot act: this needs the console's action token"};
      }
    }
    if (req.has_header("Transfer-Encoding")) return Refusal{411, "send the body with a Content-Length, not chunked"};
    const size_t lengths = req.get_header_value_count("Content-Length");
    if (lengths > 1) return Refusal{400, "more than one Content-Length"};
    if (lengths == 0) {
      // cpp-httplib would read these methods' bodies to the end of the connection.
      const bool body_method = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                               req.method == "DELETE" || req.method == "PRI";
      if (body_method) return Refusal{411, "a request body needs a Content-Length"};
      return std::nullopt;
    }
    const std::string value = req.get_header_value("Content-Length");
    uint64_t length = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
      return Refusal{400, "Content-Length is not a number"};
    }
    if (length > kMaxBodyBytes) {
      return Refusal{413, "the body is larger than " + std::to_string(kMaxBodyBytes / 1024) +
                              " KiB (an action's body is a small JSON object)"};
    }
    return std::nullopt;
  }

  // Every agent that answers: the view comes from the first quorate one (else the first).
  json Cluster() {
    json view_from;
    std::vector<json> events;
    for (const auto& h : config.hosts) {
      auto r = agent(h, {{"op", "status"}});
      if (!r.ok() || !r->is_object()) continue;
      for (const auto& e : ha::ArrayField(*r, "events")) events.push_back(e);
      if (view_from.is_null() || (Quorate(*r) && !Quorate(view_from))) view_from = *r;
    }
    std::lock_guard lock(mu);
    json v = BuildView(config, view_from, events, drills);
    if (view_from.is_null()) v["error"] = "no HA agent answered";
    v["drill"] = {{"running", drill_running}, {"scorecard", drill_scorecard}, {"error", drill_error}};
    return v;
  }

  // An action goes to the first agent whose partition is quorate.
  Result<json> Act(const json& request) {
    std::string errors;
    for (const auto& h : config.hosts) {
      auto s = agent(h, {{"op", "status"}});
      if (!s.ok() || !Quorate(*s)) continue;
      return agent(h, request);
    }
    return NotFound("no HA agent with quorum answered");
  }

  json StartDrill(const json& req) {
    const std::string fault = ha::StringField(req, "fault"), target = ha::StringField(req, "target");
    if (fault != "kill-vm" && fault != "kill-host" && fault != "partition-host") {
      return {{"ok", false}, {"error", "fault must be kill-vm, kill-host or partition-host"}};
    }
    if (fault == "kill-vm" ? !config.Vm(target) : !config.Host(target)) {
      return {{"ok", false}, {"error", "no " + std::string(fault == "kill-vm" ? "vm" : "host") + " named " + target}};
    }
    std::lock_guard lock(mu);
    if (drill_running) return {{"ok", false}, {"error", "a drill is already running"}};
    if (drill_thread.joinable()) drill_thread.join();
    drill_running = true;
    drill_error.clear();
    drill_thread = std::thread([this, fault, target] {
      Result<json> r = Internal("the drill did not run");
      try {
        r = drill(fault, target);
      } catch (const std::exception& e) {
        r = Internal(std::string("the drill failed: ") + e.what());
      } catch (...) {
        r = Internal("the drill failed");
      }
      std::lock_guard lock(mu);
      drill_running = false;
      if (r.ok()) {
        drill_scorecard = *r;
        drills.push_back({{"t_ms", RealtimeMs()}, {"fault", fault}, {"target", target}, {"scorecard", *r}});
      } else {
        drill_error = r.status().message();
      }
    });
    return {{"ok", true}};
  }
};

Result<std::unique_ptr<Console>> Console::Start(const ha::ClusterConfig& config, ConsoleOptions options, AgentCall agent,
                                                DrillRunner drill) {
  if (options.token.empty()) return InvalidArgument("the console needs a token for actions");
  if (options.read_token == options.token) return InvalidArgument("the read-only token must differ from the action token");
  for (const std::string& name : options.server_names) {
    if (!ValidServerName(name)) {
      return InvalidArgument("server name \"" + name + "\" is not NAME, NAME:PORT or [IPV6]:PORT");
    }
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return InvalidArgument("HTTPS needs both a certificate and its key (or neither, for HTTP)");
  }
  if (options.read_deadline.count() <= 0) return InvalidArgument("the read deadline must be positive");
  if (options.write_time.count() <= 0) return InvalidArgument("the write time must be positive");
  // The certificate and key are loaded and checked now, before anything listens.
  std::unique_ptr<TlsServer> tls;
  if (!options.tls_cert.empty()) {
    auto t = TlsServer::Create(options.tls_cert, options.tls_key);
    if (!t.ok()) return t.status();
    tls = std::move(*t);
  }
  auto impl = std::make_unique<Impl>(config, std::move(options), std::move(agent), std::move(drill));
  Impl* s = impl.get();
  s->http.Configure(std::move(tls), s->o.read_deadline, s->o.write_time);
  httplib::Server& http = s->http;
  http.set_payload_max_length(kMaxBodyBytes);  // Admit() refuses a larger one first
  // Every request passes Admit() on its line and headers; a client that asks before sending
  // its body ("Expect: 100-continue") hears the refusal instead of "100 Continue".
  http.set_pre_routing_handler([s](const httplib::Request& req, httplib::Response& res) {
    auto refusal = s->Admit(req);
    if (!refusal) return httplib::Server::HandlerResponse::Unhandled;
    Refuse(res, *refusal);
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_expect_100_continue_handler([s](const httplib::Request& req, httplib::Response& res) {
    auto refusal = s->Admit(req);
    if (!refusal) return 100;
    Refuse(res, *refusal);
    return refusal->status;
  });
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    Reply(res, {{"ok", false}, {"error", ErrorText(res.status)}}, res.status);
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_default_headers({{"Content-Security-Policy",
                             "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"},
                            {"X-Content-Type-Options", "nosniff"},
                            {"Cache-Control", "no-store"}});
  auto file = [s](const std::string& path) {
    return [s, path](const httplib::Request&, httplib::Response& res) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        res.status = 404;
        res.set_content("missing " + path + " (run scripts/setup: it installs the console's npm packages)", "text/plain");
        return;
      }
      std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      res.set_content(body, ContentType(path));
    };
  };
  const std::string& w = s->o.web_dir;
  http.Get("/", file(w + "/index.html"));
  http.Get("/index.html", file(w + "/index.html"));
  http.Get("/app.js", file(w + "/app.js"));
  http.Get("/style.css", file(w + "/style.css"));
  http.Get("/vendor/chart.umd.js", file(s->o.chart_js));
  http.Get("/api/cluster", [s](const httplib::Request&, httplib::Response& res) { Reply(res, s->Cluster()); });
  // Admit() has checked the action token.
  auto action = [](std::function<json(const json&)> fn) {
    return [fn](const httplib::Request& req, httplib::Response& res) {
      json body = json::parse(req.body, nullptr, false);
      if (!body.is_object()) return Reply(res, {{"ok", false}, {"error", "the request body must be a JSON object"}}, 400);
      json out = fn(body);
      const bool bad_request = ha::StringField(out, "code") == "invalid_argument";
      Reply(res, out, ha::BoolField(out, "ok") ? 200 : bad_request ? 400 : 409);
    };
  };
  // The agent's request: `op` and the body's own `keys` as they came. The agent checks their
  // types and says why not; read here with defaults (value()), a mistyped one threw (a 500
  // without a reason).
  auto ask = [](const char* op, const json& body, std::initializer_list<const char*> keys) {
    json request = {{"op", op}};
    for (const char* k : keys) {
      if (body.contains(k)) request[k] = body[k];
    }
    return request;
  };
  auto forward = [s](const json& request) {
    auto r = s->Act(request);
    return r.ok() ? *r : json{{"ok", false}, {"error", r.status().message()}};
  };
  http.Post("/api/move", action([forward, ask](const json& b) { return forward(ask("move", b, {"vm", "to"})); }));
  http.Post("/api/evacuate", action([forward, ask](const json& b) { return forward(ask("evacuate", b, {"host", "on"})); }));
  http.Post("/api/balance", action([forward, ask](const json& b) { return forward(ask("balance", b, {"dry_run"})); }));
  http.Post("/api/drill", action([s](const json& b) { return s->StartDrill(b); }));

  if (s->o.port == 0) {
    s->port = http.bind_to_any_port(s->o.address);
    if (s->port <= 0) return Busy("cannot listen on " + s->o.address);
  } else {
    if (!http.bind_to_port(s->o.address, s->o.port)) {
      return Busy("cannot listen on " + s->o.address + ":" + std::to_string(s->o.port) + " (in use?)");
    }
    s->port = s->o.port;
  }
  s->served_hosts = HostNames(s->o, s->port, s->http.tls());
  s->thread = std::thread([s] {
    try {
      s->http.listen_after_bind();
    } catch (const std::exception& e) {
      FERRY_LOG_ERROR("console: the HTTP server stopped: %s", e.what());
    } catch (...) {
      FERRY_LOG_ERROR("console: the HTTP server stopped");
    }
    s->listen_returned = true;
  });
  // cpp-httplib's stop() does nothing until the server runs: a Console stopped right after
  // Start() would otherwise serve on, and its destructor wait for ever. listen_after_bind()
  // marks it running first thing, or returns.
  while (!http.is_running() && !s->listen_returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!http.is_running()) {
    s->thread.join();
    return Internal("the console's HTTP server did not start on " + s->o.address);
  }
  return std::unique_ptr<Console>(new Console(std::move(impl)));
}

Console::Console(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Console::~Console() {
  Stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::thread drill_thread;
  {
    std::lock_guard lock(impl_->mu);  // a running drill takes mu as it ends: join without it
    drill_thread = std::move(impl_->drill_thread);
  }
  if (drill_thread.joinable()) drill_thread.join();
}

int Console::port() const { return impl_->port; }

bool Console::tls() const { return impl_->http.tls(); }

std::vector<std::string> Console::ServedHosts() const {
  return {impl_->served_hosts.begin(), impl_->served_hosts.end()};
}

void Console::Wait() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Console::Stop() { impl_->http.stop(); }

}  // namespace ferry::console
