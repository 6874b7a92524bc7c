#include "ferry/vmhost/api_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/unique_fd.h"
#include "ferry/vmhost/api_client.h"

namespace ferry::vmhost {
namespace {

using nlohmann::json;

std::string SocketPath(const char* name) { return "/tmp/ferry-api-test-" + std::to_string(getpid()) + "-" + name; }

size_t CountEntries(const char* dir) {
  size_t n = 0;
  if (DIR* d = opendir(dir)) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n;
}

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof addr.sun_path - 1));
  return addr;
}

UniqueFd Connect(const std::string& path) {
  const sockaddr_un addr = Address(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

// Receive() polled as a poller does, for up to 5 s: the verdict, or nullopt if none came.
std::optional<Result<json>> ReceiveWithin5s(ApiConnection& conn) {
  std::optional<Result<json>> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!got && std::chrono::steady_clock::now() < deadline) {
    pollfd p{conn.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    got = conn.Receive();
  }
  return got;
}

// A socket of the test's own listening at `path` (a VMM that accepts as the test says).
UniqueFd Listen(const std::string& path, int backlog) {
  const sockaddr_un addr = Address(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << path;
  EXPECT_EQ(::listen(fd.get(), backlog), 0);
  return fd;
}

json Echo(const json& r, const ApiEmit&) {
  const std::string op = r.value("op", "");
  if (op == "throw") throw std::runtime_error("boom");
  if (op == "big") return {{"ok", true}, {"blob", std::string(8 << 20, 'x')}};
  if (op == "bad-utf8") return {{"ok", true}, {"text", std::string("\xff\xfe guest bytes")}};
  return {{"ok", true}, {"echo", r}};
}

// Threads and descriptors stay flat over thousands of calls (each call a connection of its
// own, as the CLI and the HA agent make them).
TEST(ApiServer, ThousandsOfCallsLeaveNoThreadsOrDescriptors) {
  auto server = ApiServer::Start(SocketPath("flat"), Echo);
  ASSERT_TRUE(server.ok()) << server.status().message();
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(CallApi((*server)->path(), {{"op", "status"}}, 5000).ok());
  const size_t threads = CountEntries("/proc/self/task"), fds = CountEntries("/proc/self/fd");
  for (int i = 0; i < 5000; ++i) {
    auto r = CallApi((*server)->path(), {{"op", i % 2 ? "status" : "pause"}, {"i", i}}, 5000);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().message();
  }
  // The last connections may still be closing on the server's side.
  for (int i = 0; i < 100 && (*server)->stats().open > 0; ++i) usleep(10000);
  EXPECT_EQ(CountEntries("/proc/self/task"), threads);
  EXPECT_LE(CountEntries("/proc/self/fd"), fds);
  EXPECT_EQ((*server)->stats().open, 0u);
  EXPECT_GE((*server)->stats().requests, 5200u);
}

TEST(ApiServer, AHandlerThatThrowsGetsAnErrorReplyAndTheServerGoesOn) {
  auto server = ApiServer::Start(SocketPath("throw"), Echo);
  ASSERT_TRUE(server.ok());
  auto r = CallApi((*server)->path(), {{"op", "throw"}}, 5000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInternal);
  EXPECT_NE(r.status().message().find("boom"), std::string::npos);
  auto utf8 = CallApi((*server)->path(), {{"op", "bad-utf8"}}, 5000);
  EXPECT_TRUE(utf8.ok()) << utf8.status().message();
  EXPECT_TRUE(CallApi((*server)->path(), {{"op", "status"}}, 5000).ok());
}

TEST(ApiServer, GarbageLinesGetErrorsWithCodes) {
  auto server = ApiServer::Start(SocketPath("garbage"), Echo);
  ASSERT_TRUE(server.ok());
  UniqueFd fd = Connect((*server)->path());
  const char junk[] = "{not json\n[1,2]\n";
  ASSERT_EQ(::send(fd.get(), junk, sizeof junk - 1, MSG_NOSIGNAL), ssize_t(sizeof junk - 1));
  std::string in;
  char buf[4096];
  while (std::count(in.begin(), in.end(), '\n') < 2) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    in.append(buf, n);
  }
  EXPECT_NE(in.find("\"code\":\"invalid_argument\""), std::string::npos) << in;
}

// A client that sends requests and never reads its replies is cut off; others are served.
TEST(ApiServer, AClientThatDoesNotReadIsCutOffAndOthersAreServed) {
  ApiServerOptions o;
  o.write_timeout_ms = 300;
  auto server = ApiServer::Start(SocketPath("slow"), Echo, o);
  ASSERT_TRUE(server.ok());
  UniqueFd fd = Connect((*server)->path());
  const std::string req = json{{"op", "big"}}.dump() + "\n";
  for (int i = 0; i < 4; ++i) ::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(CallApi((*server)->path(), {{"op", "status"}}, 5000).ok());
  for (int i = 0; i < 300 && (*server)->stats().write_timeouts == 0; ++i) usleep(10000);
  EXPECT_EQ((*server)->stats().write_timeouts, 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(ApiServer, ConnectionsBeyondTheCapAreToldAndClosed) {
  ApiServerOptions o;
  o.max_connections = 4;
  auto server = ApiServer::Start(SocketPath("cap"), Echo, o);
  ASSERT_TRUE(server.ok());
  std::vector<UniqueFd> held;
  for (int i = 0; i < 4; ++i) held.push_back(Connect((*server)->path()));
  for (int i = 0; i < 100 && (*server)->stats().open < 4; ++i) usleep(10000);
  auto r = CallApi((*server)->path(), {{"op", "status"}}, 5000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kBusy);
  held.clear();
  for (int i = 0; i < 100 && (*server)->stats().open > 0; ++i) usleep(10000);
  EXPECT_TRUE(CallApi((*server)->path(), {{"op", "status"}}, 5000).ok());
}

TEST(ApiServer, StopEndsIdleConnectionsAtOnceAndRemovesTheSocket) {
  auto server = ApiServer::Start(SocketPath("stop"), Echo);
  ASSERT_TRUE(server.ok());
  std::string path = (*server)->path();
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 50; ++i) idle.push_back(Connect(path));
  auto t0 = std::chrono::steady_clock::now();
  (*server)->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  char c;
  EXPECT_LE(::recv(idle[0].get(), &c, 1, 0), 0);  // closed (or reset, if never accepted) by the server
}

TEST(ApiServer, RefusesAPathThatIsNotASocketOrIsInUse) {
  std::string file = SocketPath("file");
  { UniqueFd f(::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)); }
  EXPECT_FALSE(ApiServer::Start(file, Echo).ok());
  ::unlink(file.c_str());
  auto first = ApiServer::Start(SocketPath("twice"), Echo);
  ASSERT_TRUE(first.ok());
  auto second = ApiServer::Start(SocketPath("twice"), Echo);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), ErrorCode::kBusy);
}

// What a broken or hostile VMM answers, read by a poller (Send, then Receive): garbage, a
// response without "ok", a doubled response, progress lines before the answer, an error, an
// answer that never ends, the peer closing. Each bad answer is an error. One bad line keeps
// the connection (the stream is still one line per answer, and a VMM that answers is not
// hung); a second answer, an endless one or a closed peer close it, so a late or extra answer
// can never be read as the next question's, and the next Send connects afresh.
TEST(ApiConnection, ReceiveTakesGarbageAsAnErrorAndNeverAsTheNextAnswer) {
  const std::string path = SocketPath("garbage");
  UniqueFd listener = Listen(path, 8);
  struct Case {
    std::string reply;              // written once the request is in ("": closes at once)
    std::optional<ErrorCode> code;  // nullopt: an answer
    bool closes;                    // the client drops the connection
  };
  const std::vector<Case> cases = {
      {"not json\n", ErrorCode::kCorrupt, false},
      {"{\"state\":\"running\"}\n", ErrorCode::kCorrupt, false},
      {"{\"ok\":\"yes\"}\n", ErrorCode::kCorrupt, false},
      {"{\"ok\":true}\n{\"ok\":true}\n", ErrorCode::kCorrupt, true},
      {"{\"progress\":1}\n{\"progress\":2}\n{\"ok\":true,\"x\":7}\n", std::nullopt, false},
      {"{\"ok\":false,\"code\":\"busy\",\"error\":\"later\"}\n", ErrorCode::kBusy, false},
      {std::string(9u << 20, 'x'), ErrorCode::kCorrupt, true},
      {"", ErrorCode::kIo, true},
  };
  // The fake VMM's thread, ended and joined, and the socket removed, on every path (a failed
  // assertion included: the client's connection, declared after, closes first).
  struct Vmm {
    std::thread thread;
    int listener;
    std::string path;
    ~Vmm() {
      ::shutdown(listener, SHUT_RDWR);  // ends a waiting accept
      if (thread.joinable()) thread.join();
      ::unlink(path.c_str());
    }
  } vmm{{}, listener.get(), path};
  vmm.thread = std::thread([&] {
    for (const auto& c : cases) {
      UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      char buf[4096];
      std::string in;
      while (in.find('\n') == std::string::npos) {
        const ssize_t n = ::read(conn.get(), buf, sizeof buf);
        if (n <= 0) return;
        in.append(buf, static_cast<size_t>(n));
      }
      for (size_t done = 0; done < c.reply.size();) {
        const ssize_t n = ::send(conn.get(), c.reply.data() + done, c.reply.size() - done, MSG_NOSIGNAL);
        if (n <= 0) break;  // the client gave up reading (the oversized answer)
        done += static_cast<size_t>(n);
      }
      // Closed only once the client has: a close right after the reply would turn a bad
      // answer into "closed the connection" when the client reads both at once.
      if (!c.reply.empty()) (void)::read(conn.get(), buf, sizeof buf);
    }
  });
  ApiConnection conn(path);
  for (size_t k = 0; k < cases.size(); ++k) {
    ASSERT_TRUE(conn.Send({{"op", "status"}}).ok()) << k;
    std::optional<Result<json>> got = ReceiveWithin5s(conn);
    ASSERT_TRUE(got.has_value()) << "case " << k << ": no verdict";
    if (cases[k].code) {
      EXPECT_EQ(got->status().code(), *cases[k].code) << "case " << k << ": " << got->status().message();
    } else {
      ASSERT_TRUE(got->ok()) << "case " << k << ": " << got->status().message();
      EXPECT_EQ((**got)["x"], 7);
    }
    EXPECT_EQ(conn.connected(), !cases[k].closes) << "case " << k;
    EXPECT_EQ(conn.connects(), k + 1);
    conn.Close();  // the server serves one question per connection
  }
}

}  // namespace
}  // namespace ferry::vmhost

namespace ferry::vmhost {
namespace {

// The HA agent's probe: one connection for a VMM's whole life, re-opened only after a failure,
// and a failed exchange never leaves a late answer to be read as the next call's.
TEST(ApiConnection, ManyCallsShareOneConnectionAndAFailureReconnects) {
  const std::string path = SocketPath("persistent");
  auto server = ApiServer::Start(path, Echo);
  ASSERT_TRUE(server.ok()) << server.status().message();
  ApiConnection conn(path);
  for (int i = 0; i < 500; ++i) {
    auto r = conn.Call({{"op", "status"}, {"i", i}}, 5000);
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_EQ((*r)["echo"]["i"], i) << "an answer to another call";
  }
  EXPECT_EQ(conn.connects(), 1u);
  EXPECT_EQ((*server)->stats().accepted, 1u);
  EXPECT_EQ((*server)->stats().requests, 500u);
  // An error reply keeps the connection (it is an answer); a dead server drops it.
  auto thrown = conn.Call({{"op", "throw"}}, 5000);
  EXPECT_FALSE(thrown.ok());
  EXPECT_TRUE(conn.connected());
  (*server)->Stop();
  server->reset();
  auto down = conn.Call({{"op", "status"}}, 1000);
  EXPECT_FALSE(down.ok());
  EXPECT_FALSE(conn.connected());
  auto none = conn.Call({{"op", "status"}}, 1000);
  EXPECT_EQ(none.status().code(), ErrorCode::kNotFound) << none.status().message();
  auto again = ApiServer::Start(path, Echo);
  ASSERT_TRUE(again.ok()) << again.status().message();
  ASSERT_TRUE(conn.Call({{"op", "status"}}, 5000).ok());
  EXPECT_EQ(conn.connects(), 2u);
}

}  // namespace
}  // namespace ferry::vmhost

namespace ferry::vmhost {
namespace {

// A VMM that accepts no connection (hung, or SIGSTOPped, with its listen backlog full): a
// call fails at once as a timeout. A blocking connect waited there without any deadline.
TEST(ApiConnection, AVmmWhoseBacklogIsFullIsATimeoutNotAHang) {
  const std::string path = SocketPath("full");
  UniqueFd listener = Listen(path, 0);
  const sockaddr_un addr = Address(path);
  std::vector<UniqueFd> queued;
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) break;
    queued.push_back(std::move(fd));
  }
  ASSERT_LT(queued.size(), 16u) << "the backlog never filled";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = CallApi(path, {{"op", "status"}}, 5000);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status().code(), ErrorCode::kTimeout) << r.status().message();
  EXPECT_NE(r.status().message().find("backlog"), std::string::npos) << r.status().message();
  EXPECT_LT(waited, std::chrono::seconds(1));
  ApiConnection conn(path);
  EXPECT_EQ(conn.Send({{"op", "status"}}).code(), ErrorCode::kTimeout);
  EXPECT_FALSE(conn.connected());
  ::unlink(path.c_str());
}

// Send() and Receive(), as a poller uses them: nothing until the whole answer is in, then
// the answer, on the one connection.
TEST(ApiConnection, SendThenReceiveReadsTheWholeAnswer) {
  const std::string path = SocketPath("split");
  auto server = ApiServer::Start(path, Echo);
  ASSERT_TRUE(server.ok()) << server.status().message();
  ApiConnection conn(path);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(conn.Send({{"op", "status"}, {"i", i}, {"pad", std::string(i == 1 ? 100000 : 1, 'p')}}).ok());
    std::optional<Result<json>> got = ReceiveWithin5s(conn);
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(got->ok()) << got->status().message();
    EXPECT_EQ((**got)["echo"]["i"], i);
    EXPECT_EQ((**got)["echo"]["pad"].get<std::string>().size(), i == 1 ? 100000u : 1u);
  }
  EXPECT_EQ(conn.connects(), 1u);
  (*server)->Stop();
}

}  // namespace
}  // namespace ferry::vmhost
