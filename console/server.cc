#include "ferry/console/server.h"

#include <httplib.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "ferry/base/clock.h"
#include "ferry/console/view.h"

namespace ferry::console {

using nlohmann::json;

struct Console::Impl {
  const ha::ClusterConfig& config;
  ConsoleOptions o;
  AgentCall agent;
  DrillRunner drill;
  httplib::Server http;
  std::thread thread;
  int port = 0;

  std::mutex mu;  // guards the drill state below
  bool drill_running = false;
  json drill_scorecard = nullptr;
  std::string drill_error;
  std::vector<json> drills;  // finished, for the history
  std::thread drill_thread;

  Impl(const ha::ClusterConfig& c, ConsoleOptions opts, AgentCall a, DrillRunner d)
      : config(c), o(std::move(opts)), agent(std::move(a)), drill(std::move(d)) {}

  // Every agent that answers: the view comes from the first quorate one (else the first).
  json Cluster() {
    json view_from;
    std::vector<json> events;
    for (const auto& h : config.hosts) {
      auto r = agent(h, {{"op", "status"}});
      if (!r.ok()) continue;
      for (const auto& e : (*r)["events"]) events.push_back(e);
      bool quorate = (*r)["cluster"].value("quorate", false);
      if (view_from.is_null() || (quorate && !view_from["cluster"].value("quorate", false))) view_from = *r;
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
      if (!s.ok() || !(*s)["cluster"].value("quorate", false)) continue;
      return agent(h, request);
    }
    return NotFound("no HA agent with quorum answered");
  }

  json StartDrill(const json& req) {
    const std::string fault = req.value("fault", ""), target = req.value("target", "");
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
      auto r = drill(fault, target);
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

namespace {

void Reply(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

const char* ContentType(const std::string& path) {
  if (path.ends_with(".html")) return "text/html; charset=utf-8";
  if (path.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (path.ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace

Result<std::unique_ptr<Console>> Console::Start(const ha::ClusterConfig& config, ConsoleOptions options, AgentCall agent,
                                                DrillRunner drill) {
  if (options.token.empty()) return InvalidArgument("the console needs a token for actions");
  auto impl = std::make_unique<Impl>(config, std::move(options), std::move(agent), std::move(drill));
  Impl* s = impl.get();
  httplib::Server& http = s->http;
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
  auto action = [s](std::function<json(const json&)> fn) {
    return [s, fn](const httplib::Request& req, httplib::Response& res) {
      if (req.get_header_value("Authorization") != "Bearer " + s->o.token) {
        return Reply(res, {{"ok", false}, {"error", "this action needs the console's token (Authorization: Bearer ...)"}}, 401);
      }
      json body = json::parse(req.body, nullptr, false);
      if (!body.is_object()) return Reply(res, {{"ok", false}, {"error", "the request body must be a JSON object"}}, 400);
      json out = fn(body);
      Reply(res, out, out.value("ok", false) ? 200 : 409);
    };
  };
  auto forward = [s](const json& request) {
    auto r = s->Act(request);
    return r.ok() ? *r : json{{"ok", false}, {"error", r.status().message()}};
  };
  http.Post("/api/move", action([forward](const json& b) {
    return forward({{"op", "move"}, {"vm", b.value("vm", "")}, {"to", b.value("to", "")}});
  }));
  http.Post("/api/evacuate", action([forward](const json& b) {
    return forward({{"op", "evacuate"}, {"host", b.value("host", "")}, {"on", b.value("on", true)}});
  }));
  http.Post("/api/balance", action([forward](const json& b) {
    return forward({{"op", "balance"}, {"dry_run", b.value("dry_run", true)}});
  }));
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
  s->thread = std::thread([s] { s->http.listen_after_bind(); });
  return std::unique_ptr<Console>(new Console(std::move(impl)));
}

Console::Console(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Console::~Console() {
  Stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::lock_guard lock(impl_->mu);
  if (impl_->drill_thread.joinable()) impl_->drill_thread.join();
}

int Console::port() const { return impl_->port; }

void Console::Wait() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Console::Stop() { impl_->http.stop(); }

}  // namespace ferry::console
