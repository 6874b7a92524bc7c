// ferry console: the operator's web console (console/server.h) for the cluster in --config,
// talking to the hosts' HA agents over their API sockets and running drills as `ferry drill`.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "commands.h"
#include "ferry/console/server.h"
#include "ferry/ha/config.h"
#include "ha_agent.h"
#include "ferry/ha/subprocess.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct ConsoleFlags {
  std::string config;
  std::string listen = "127.0.0.1:8080";
  std::string token_file;
  std::string read_token_file;
  std::vector<std::string> server_names;
  std::string tls_cert;  // both or neither: HTTPS
  std::string tls_key;
};

std::string RandomToken() {
  std::random_device rd;
  char buf[33];
  for (int i = 0; i < 32; i += 8) std::snprintf(buf + i, 9, "%08x", rd());
  return std::string(buf, 32);
}

// The token on a file's first line; empty when it is shorter than 16 characters.
std::string ReadToken(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  return token.size() < 16 ? std::string() : token;
}

// addr:port as a URL carries it (an IPv6 address in brackets).
std::string UrlAuthority(const std::string& address, int port) {
  const bool ipv6 = address.find(':') != std::string::npos;
  return (ipv6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::string SelfExe() {
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, n) : "ferry";
}

int DoConsole(const ConsoleFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  console::ConsoleOptions o;
  size_t colon = f.listen.rfind(':');
  if (colon == std::string::npos) return Fail("--listen must be ADDR:PORT", kExitUsage);
  o.address = f.listen.substr(0, colon);
  try {
    o.port = std::stoi(f.listen.substr(colon + 1));
  } catch (const std::exception&) {
    return Fail("--listen " + f.listen + ": the port is not a number", kExitUsage);
  }
  if (o.port < 0 || o.port > 65535) return Fail("--listen: the port must be 0..65535", kExitUsage);
  if (!f.token_file.empty()) {
    o.token = ReadToken(f.token_file);
    if (o.token.empty()) return Fail("--token-file " + f.token_file + " must hold a token of 16 characters or more", kExitUsage);
  } else {
    o.token = RandomToken();
  }
  if (!f.read_token_file.empty()) {
    o.read_token = ReadToken(f.read_token_file);
    if (o.read_token.empty()) {
      return Fail("--read-token-file " + f.read_token_file + " must hold a token of 16 characters or more", kExitUsage);
    }
    if (o.read_token == o.token) return Fail("--read-token-file must hold another token than the action token", kExitUsage);
  }
  o.server_names = f.server_names;
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    return Fail("--tls-cert and --tls-key go together: give both to serve HTTPS, or neither for HTTP", kExitUsage);
  }
  o.tls_cert = f.tls_cert;
  o.tls_key = f.tls_key;
  o.web_dir = FERRY_CONSOLE_WEB_DIR;
  o.chart_js = FERRY_CONSOLE_CHART_JS;
  if (o.address.rfind("127.", 0) != 0 && o.address != "::1" && o.address != "localhost") {
    std::fprintf(stderr,
                 "ferry console: warning: listening on %s, not loopback: anyone who can reach it may try the token\n",
                 o.address.c_str());
    if (f.server_names.empty()) {
      std::fprintf(stderr, "ferry console: only Host %s is answered (with localhost when on every address): "
                   "--server-name NAME adds the names browsers use\n", UrlAuthority(o.address, o.port).c_str());
    }
  }
  const std::string config_path = f.config, exe = SelfExe();
  auto agent = [](const ha::HostConfig& h, const json& req) { return CallApi(AgentSocket(h), req, 3000); };
  auto drill = [config_path, exe](const std::string& fault, const std::string& target) -> Result<json> {
    std::string out;
    int rc = ha::RunQuiet({exe, "drill", "--config", config_path, "--json", "--" + fault, target}, &out, 300);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    const size_t nl = out.rfind('\n');
    json card = json::parse(nl == std::string::npos ? out : out.substr(nl + 1), nullptr, false);
    if (rc != 0) {
      return Internal("ferry drill --" + fault + " " + target + " failed (exit " + std::to_string(rc) + ")" +
                      (card.is_object() ? ": " + card.dump() : ""));
    }
    if (!card.is_object()) return Internal("ferry drill printed no scorecard");
    return card;
  };
  // SIGINT/SIGTERM end the console: block them here and wait for one on this thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Start() checks the certificate and key before it listens.
  auto con = console::Console::Start(*c, o, agent, drill);
  if (!con.ok()) {
    const bool usage = con.status().code() == ErrorCode::kInvalidArgument;  // a bad certificate or key among them
    return Fail("console: " + con.status().message(), usage ? kExitUsage : kExitError);
  }
  const std::string at = UrlAuthority(o.address, (*con)->port());
  const char* scheme = (*con)->tls() ? "https" : "http";
  // The URL with the token comes first: scripts and the browser test take the first URL printed.
  std::printf("ferry console: %s://%s/?token=%s\n", scheme, at.c_str(), o.token.c_str());
  if (!o.read_token.empty()) {
    std::printf("ferry console: read-only: %s://%s/?token=%s\n", scheme, at.c_str(), o.read_token.c_str());
  }
  if ((*con)->tls()) {
    std::printf("ferry console: serving https://%s (TLS)\n", at.c_str());
  } else {
    std::printf("ferry console: serving http://%s (plain HTTP, no TLS: --tls-cert and --tls-key serve HTTPS)\n", at.c_str());
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  (*con)->Stop();
  return kExitOk;
}

}  // namespace

void AddConsoleCommand(CLI::App& app, CommandFn* selected) {
  auto f = std::make_shared<ConsoleFlags>();
  CLI::App* c = app.add_subcommand("console", "Serve the operator console (web page, JSON API) for an HA cluster");
  c->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  c->add_option("--listen", f->listen, "ADDR:PORT to serve on (loopback by default; port 0: any free one)")->capture_default_str();
  c->add_option("--token-file", f->token_file,
                "A file holding the token every /api/ request needs (default: a random one, printed in the URL)")
      ->check(CLI::ExistingFile);
  c->add_option("--read-token-file", f->read_token_file,
                "A file holding a read-only token: it reads the cluster (GET /api/cluster) but cannot act")
      ->check(CLI::ExistingFile);
  c->add_option("--server-name", f->server_names,
                "A Host name the console also answers to: NAME (at its port) or NAME:PORT; repeatable")
      ->allow_extra_args(false);
  c->add_option("--tls-cert", f->tls_cert,
                "Serve HTTPS with this PEM certificate (its chain may follow it); needs --tls-key")
      ->check(CLI::ExistingFile);
  c->add_option("--tls-key", f->tls_key, "The PEM private key (unencrypted) of --tls-cert")->check(CLI::ExistingFile);
  c->callback([selected, f] { *selected = [f] { return DoConsole(*f); }; });
}

}  // namespace ferry::cli
