// The console's HTTP edge (server.h) on real loopback sockets: the token is checked before a
// body is read, bodies and headers are capped, /api/ needs a token and the read-only token
// cannot act, and a Host the console does not serve is refused. No agent runs: the agent
// calls fail, so /api/cluster answers a view without one and an action answers 409.
#include "ferry/console/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/base/unique_fd.h"

namespace ferry::console {
namespace {

using nlohmann::json;

constexpr char kToken[] = "action-token-0123456789";
constexpr char kReadToken[] = "read-token-0123456789";

ha::ClusterConfig Config() {
  auto c = ha::ClusterConfig::Parse(json::parse(R"({"name":"t",
    "hosts": [{"name":"a","nodeid":1,"address":"127.0.0.1","dir":"/nonexistent/ferry-console-test/a"}],
    "vms": []})"));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

// The console on an ephemeral loopback port, with drills that never run and agents that never
// answer (or `agent`).
struct TestConsole {
  ha::ClusterConfig config = Config();
  std::unique_ptr<Console> console;

  explicit TestConsole(std::vector<std::string> server_names = {}, AgentCall agent = nullptr) {
    ConsoleOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.token = kToken;
    o.read_token = kReadToken;
    o.server_names = std::move(server_names);
    o.web_dir = FERRY_CONSOLE_WEB_DIR;
    o.chart_js = FERRY_CONSOLE_CHART_JS;
    if (!agent) agent = [](const ha::HostConfig&, const json&) -> Result<json> { return NotFound("no agent in this test"); };
    auto drill = [](const std::string&, const std::string&) -> Result<json> { return Internal("no drills in this test"); };
    auto c = Console::Start(config, o, agent, drill);
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (c.ok()) console = std::move(*c);
  }
  int port() const { return console ? console->port() : 0; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port()); }
};

struct Answer {
  int status = 0;  // 0: no HTTP answer
  std::string body;
  json Json() const { return json::parse(body, nullptr, false); }
};

// Sends `head`, then `body_bytes` bytes of 'x' (stopping when the server closes), and reads
// the answer to the end of the connection. Every step is bounded by 5 s socket timeouts.
Answer Exchange(int port, const std::string& head, size_t body_bytes = 0) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (!fd.valid()) return {};
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  std::string out = head;
  const std::string chunk(64 * 1024, 'x');
  size_t sent_body = 0;
  for (size_t done = 0; done < out.size() || sent_body < body_bytes;) {
    const bool in_head = done < out.size();
    const char* p = in_head ? out.data() + done : chunk.data();
    const size_t n = in_head ? out.size() - done : std::min(chunk.size(), body_bytes - sent_body);
    ssize_t w = ::send(fd.get(), p, n, MSG_NOSIGNAL);
    if (w <= 0) break;  // the server has answered and closed
    (in_head ? done : sent_body) += static_cast<size_t>(w);
  }
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  Answer r;
  if (got.rfind("HTTP/1.1 ", 0) != 0 || got.size() < 12) return r;
  r.status = std::atoi(got.c_str() + 9);
  const size_t blank = got.find("\r\n\r\n");
  if (blank != std::string::npos) r.body = got.substr(blank + 4);
  return r;
}

std::string Get(const std::string& path, const std::string& host, const std::string& auth = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + (auth.empty() ? "" : "Authorization: Bearer " + auth + "\r\n") +
         "\r\n";
}

std::string Post(const std::string& path, const std::string& host, const std::string& auth, size_t length,
                 const std::string& extra = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + (auth.empty() ? "" : "Authorization: Bearer " + auth + "\r\n") +
         "Content-Type: application/json\r\nContent-Length: " + std::to_string(length) + "\r\n" + extra + "\r\n";
}

long RssKib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

void ExpectError(const Answer& a, int status) {
  EXPECT_EQ(a.status, status) << a.body;
  json j = a.Json();
  ASSERT_TRUE(j.is_object()) << a.body;
  EXPECT_EQ(j["ok"], false) << a.body;
  EXPECT_FALSE(j.value("error", "").empty()) << a.body;
}

TEST(ConsoleServer, UnauthenticatedBigPostsAreRefusedBeforeTheirBodiesAreRead) {
  TestConsole c;
  ASSERT_TRUE(c.console);
  // Warm up: the server's threads and allocator arenas count before, not during.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(Exchange(c.port(), Get("/api/cluster", c.host(), kReadToken)).status, 200);
  const long before = RssKib();
  std::vector<std::future<Answer>> posts;
  for (int i = 0; i < 4; ++i) {
    posts.push_back(std::async(std::launch::async, [&] {
      return Exchange(c.port(), Post("/api/move", c.host(), "", 10 << 20), 10 << 20);
    }));
  }
  for (auto& p : posts) ExpectError(p.get(), 401);
  const long after = RssKib();
  EXPECT_LT(after - before, 4 * 1024) << "RSS grew from " << before << " KiB to " << after << " KiB";
  // A wrong token is no better than none.
  ExpectError(Exchange(c.port(), Post("/api/move", c.host(), "action-token-0123456788", 10 << 20), 10 << 20), 401);
}

TEST(ConsoleServer, AnAuthenticatedOversizeBodyGets413) {
  TestConsole c;
  ASSERT_TRUE(c.console);
  const long before = RssKib();
  ExpectError(Exchange(c.port(), Post("/api/move", c.host(), kToken, 10 << 20), 10 << 20), 413);
  ExpectError(Exchange(c.port(), Post("/api/move", c.host(), kToken, kMaxBodyBytes + 1), kMaxBodyBytes + 1), 413);
  // A chunked body, or one with no length, would be read without a bound: refused.
  ExpectError(Exchange(c.port(), "POST /api/move HTTP/1.1\r\nHost: " + c.host() + "\r\nAuthorization: Bearer " + kToken +
                                     "\r\nTransfer-Encoding: chunked\r\n\r\n"),
              411);
  ExpectError(Exchange(c.port(), "POST /api/move HTTP/1.1\r\nHost: " + c.host() + "\r\nAuthorization: Bearer " + kToken +
                                     "\r\n\r\n"),
              411);
  // A client that waits for "100 Continue" hears the refusal instead.
  ExpectError(Exchange(c.port(), Post("/api/move", c.host(), "", 10 << 20, "Expect: 100-continue\r\n")), 401);
  ExpectError(Exchange(c.port(), Post("/api/move", c.host(), kToken, 10 << 20, "Expect: 100-continue\r\n")), 413);
  EXPECT_LT(RssKib() - before, 4 * 1024);
  // A body within the cap is read and acted on: no agent here, so 409.
  const std::string body = R"({"vm":"kv","to":"a"})";
  Answer a = Exchange(c.port(), Post("/api/move", c.host(), kToken, body.size()) + body);
  ExpectError(a, 409);
  EXPECT_NE(a.Json().value("error", "").find("quorum"), std::string::npos) << a.body;
}

TEST(ConsoleServer, AnOverlongRequestLineOrHeaderIsCutOff) {
  TestConsole c;
  ASSERT_TRUE(c.console);
  for (int i = 0; i < 8; ++i) Exchange(c.port(), Get("/", c.host()));
  const long before = RssKib();
  // No newline ever comes: the server stops reading at its cap.
  ExpectError(Exchange(c.port(), "GET /", 10 << 20), 431);
  // Past the request line, cpp-httplib answers a header it could not read with 400.
  ExpectError(Exchange(c.port(), "GET / HTTP/1.1\r\nHost: " + c.host() + "\r\nX-Big: ", 10 << 20), 400);
  EXPECT_LT(RssKib() - before, 4 * 1024);
}

TEST(ConsoleServer, TheClusterViewNeedsAToken) {
  TestConsole c;
  ASSERT_TRUE(c.console);
  ExpectError(Exchange(c.port(), Get("/api/cluster", c.host())), 401);
  ExpectError(Exchange(c.port(), Get("/api/cluster", c.host(), "not-the-token-0123456789")), 401);
  ExpectError(Exchange(c.port(), Get("/api/nothing", c.host())), 401);
  for (const char* token : {kReadToken, kToken}) {
    Answer a = Exchange(c.port(), Get("/api/cluster", c.host(), token));
    EXPECT_EQ(a.status, 200) << a.body;
    json v = a.Json();
    EXPECT_EQ(v["cluster"], "t") << a.body;
    EXPECT_EQ(v["error"], "no HA agent answered") << a.body;
  }
  // The page itself is public.
  Answer page = Exchange(c.port(), Get("/", c.host()));
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<html"), std::string::npos);
  ExpectError(Exchange(c.port(), Get("/no-such-page", c.host())), 404);
}

TEST(ConsoleServer, TheReadTokenCannotAct) {
  TestConsole c;
  ASSERT_TRUE(c.console);
  const std::string body = R"({"fault":"kill-vm","target":"kv"})";
  for (const char* path : {"/api/move", "/api/evacuate", "/api/balance", "/api/drill"}) {
    ExpectError(Exchange(c.port(), Post(path, c.host(), kReadToken, body.size()) + body), 403);
    ExpectError(Exchange(c.port(), Post(path, c.host(), "", body.size()) + body), 401);
  }
  // The action token gets through to the action (which finds no VM kv here).
  Answer a = Exchange(c.port(), Post("/api/drill", c.host(), kToken, body.size()) + body);
  ExpectError(a, 409);
  EXPECT_EQ(a.Json()["error"], "no vm named kv");
}

// An action's fields reach the agent as they came, whatever their type, and its refusal of
// a bad one is a 400; a drill's mistyped fields are refused. Before, the console read them
// with defaults that threw on another type: a 500 without a reason, and nothing sent.
TEST(ConsoleServer, AnActionsMistypedFieldsReachTheAgentOrAreRefusedWithAReason) {
  std::mutex mu;
  std::vector<json> asked;
  TestConsole c({}, [&](const ha::HostConfig&, const json& request) -> Result<json> {
    if (request.value("op", "") == "status") return json{{"ok", true}, {"cluster", {{"quorate", true}}}};
    std::lock_guard lock(mu);
    asked.push_back(request);
    return json{{"ok", false}, {"error", "as the agent refuses it"}, {"code", "invalid_argument"}};
  });
  ASSERT_TRUE(c.console);
  auto post = [&](const char* path, const json& body) {
    const std::string text = body.dump();
    return Exchange(c.port(), Post(path, c.host(), kToken, text.size()) + text);
  };
  ExpectError(post("/api/evacuate", {{"host", "a"}, {"on", "false"}}), 400);
  ExpectError(post("/api/move", {{"vm", 5}, {"to", json::array()}}), 400);
  ExpectError(post("/api/balance", {{"dry_run", "no"}}), 400);
  ExpectError(post("/api/drill", {{"fault", 7}, {"target", nullptr}}), 409);
  std::lock_guard lock(mu);
  ASSERT_EQ(asked.size(), 3u);
  EXPECT_EQ(asked[0], json({{"op", "evacuate"}, {"host", "a"}, {"on", "false"}}));
  EXPECT_EQ(asked[1], json({{"op", "move"}, {"vm", 5}, {"to", json::array()}}));
  EXPECT_EQ(asked[2], json({{"op", "balance"}, {"dry_run", "no"}}));
}

// An agent's status answer of another shape (another version, a broken agent) still makes a
// view, and no action is sent to an agent that does not say it is quorate. Before, an answer
// that was not an object, or whose "quorate" was not a boolean, threw: a 500 without a reason.
TEST(ConsoleServer, AnAgentsAnswerOfAnyShapeStillMakesAView) {
  for (const json& status : {json::array({1, 2}), json{{"ok", true}, {"cluster", {{"quorate", "yes"}}}, {"events", 5}},
                             json{{"ok", true}, {"cluster", {{"hosts", 3}, {"vms", {{"name", 1}}}, {"members", "a"}}}},
                             json{{"ok", true}, {"cluster", nullptr}, {"events", {1, "x", {{"t_ms", "soon"}}}}}}) {
    TestConsole c({}, [&](const ha::HostConfig&, const json&) -> Result<json> { return status; });
    ASSERT_TRUE(c.console);
    Answer view = Exchange(c.port(), Get("/api/cluster", c.host(), kToken));
    EXPECT_EQ(view.status, 200) << status.dump() << ": " << view.body;
    EXPECT_EQ(view.Json().value("quorate", true), false) << view.body;
    const std::string body = R"({"vm":"kv","to":"a"})";
    Answer a = Exchange(c.port(), Post("/api/move", c.host(), kToken, body.size()) + body);
    ExpectError(a, 409);
    EXPECT_EQ(a.Json().value("error", ""), "no HA agent with quorum answered") << status.dump();
  }
}

TEST(ConsoleServer, AHostItDoesNotServeIsRefused) {
  TestConsole c({"console.invalid", "proxy.invalid:8443"});
  ASSERT_TRUE(c.console);
  const std::string port = std::to_string(c.port());
  for (const std::string& host : std::vector<std::string>{"rebind.invalid:" + port, "rebind.invalid", "localhost:1", "console.invalid:1",
                                  "proxy.invalid:" + port, std::string()}) {
    SCOPED_TRACE("Host: " + host);
    ExpectError(Exchange(c.port(), Get("/api/cluster", host, kToken)), 421);
    ExpectError(Exchange(c.port(), Get("/", host)), 421);
    // Refused before the body is read, whatever the token.
    ExpectError(Exchange(c.port(), Post("/api/move", host, kToken, 10 << 20), 10 << 20), 421);
  }
  ExpectError(Exchange(c.port(), "GET / HTTP/1.0\r\n\r\n"), 421);  // no Host at all
  // A Host that is not UTF-8 is quoted in the refusal: still a 421 saying why, not a 500 or
  // (on the 100-continue path) no answer at all.
  const std::string bad = "\xff\xfe.invalid";
  ExpectError(Exchange(c.port(), Get("/", bad)), 421);
  ExpectError(Exchange(c.port(), Post("/api/move", bad, kToken, 10 << 20, "Expect: 100-continue\r\n")), 421);
}

TEST(ConsoleServer, TheNamesItServesAreAccepted) {
  TestConsole c({"Console.Invalid", "proxy.invalid:8443"});
  ASSERT_TRUE(c.console);
  const std::string port = std::to_string(c.port());
  for (const std::string& host : std::vector<std::string>{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port,
                                  "console.invalid:" + port, "proxy.invalid:8443"}) {
    SCOPED_TRACE("Host: " + host);
    EXPECT_EQ(Exchange(c.port(), Get("/api/cluster", host, kReadToken)).status, 200);
    EXPECT_EQ(Exchange(c.port(), Get("/", host)).status, 200);
  }
  std::vector<std::string> served = c.console->ServedHosts();
  EXPECT_NE(std::find(served.begin(), served.end(), "console.invalid:" + port), served.end());
}

TEST(ConsoleServer, StartRefusesOptionsThatWouldWeakenIt) {
  ha::ClusterConfig config = Config();
  auto agent = [](const ha::HostConfig&, const json&) -> Result<json> { return NotFound("none"); };
  auto drill = [](const std::string&, const std::string&) -> Result<json> { return Internal("none"); };
  ConsoleOptions o;
  o.port = 0;
  EXPECT_FALSE(Console::Start(config, o, agent, drill).ok());  // no token
  o.token = o.read_token = kToken;
  EXPECT_FALSE(Console::Start(config, o, agent, drill).ok());  // the same token twice
  o.read_token.clear();
  o.server_names = {"bad name"};
  EXPECT_FALSE(Console::Start(config, o, agent, drill).ok());
  o.server_names = {"ok.invalid"};
  o.write_time = std::chrono::milliseconds(0);
  EXPECT_FALSE(Console::Start(config, o, agent, drill).ok());
  o.write_time = kDefaultWriteTime;
  EXPECT_TRUE(Console::Start(config, o, agent, drill).ok());
}

}  // namespace
}  // namespace ferry::console
