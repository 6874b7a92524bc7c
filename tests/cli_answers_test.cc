// The ferry CLI's HA commands against an agent whose answers have another shape (an agent of
// another version, a broken one): a fake agent on the host's agent.sock, made by the test,
// answers every request with the same JSON line. Whatever it says, `ferry ha status`,
// `ha balance`, `ha move` and `ha evacuate` end with an exit code of their own (0, or 1 with a
// reason), never a signal. Before, the status printing read a const json's missing keys
// (undefined behaviour) and value() threw on a mistyped field: std::terminate, exit 134 with
// a core dump. No KVM and no Corosync: label unit.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "ferry/base/unique_fd.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

// An agent (or a VMM) of the test's own: answers every request line on `path` with `answer`,
// until destroyed (its thread joined on every path).
class FakeAgent {
 public:
  FakeAgent(const std::string& path, std::string answer) : path_(path), answer_(std::move(answer)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof addr.sun_path - 1));
    listener_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ok_ = listener_.valid() && ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
          ::listen(listener_.get(), 16) == 0;
    if (ok_) thread_ = std::thread([this] { Serve(); });
  }
  ~FakeAgent() {
    stop_ = true;
    ::shutdown(listener_.get(), SHUT_RDWR);  // wakes the accept
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
  }
  bool ok() const { return ok_; }

 private:
  void Serve() {
    while (!stop_) {
      UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c.valid()) return;
      timeval tv{2, 0};
      ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string in;
      char buf[4096];
      for (ssize_t n; in.find('\n') == std::string::npos && (n = ::recv(c.get(), buf, sizeof buf, 0)) > 0;) in.append(buf, n);
      const std::string out = answer_ + "\n";
      (void)::send(c.get(), out.data(), out.size(), MSG_NOSIGNAL);
    }
  }

  std::string path_, answer_;
  UniqueFd listener_;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(CliAnswers, AnAgentsAnswerOfAnyShapeIsAnExitCodeNeverACrash) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string config = dir.File("ha.json");
  std::ofstream(config) << R"({"hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":")" + dir.path() +
                               R"("}], "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","port":7100}]})";
  const std::vector<std::string> answers = {
      R"({"ok":true})",
      R"({"ok":true,"host":5,"cluster":[1,2]})",
      R"({"ok":true,"cluster":{"quorate":"yes","members":[1,null],"hosts":{"name":"a"},"vms":"kv"}})",
      R"({"ok":true,"cluster":{"hosts":[{"name":"a","member":1,"instances":[{"vm":"kv","generation":-1,"silent_ms":"x"},3]}],)"
      R"("vms":[{"name":"kv","owner":"a","generation":"3","state":"running"}]},"events":{"kind":1}})",
      R"({"ok":true,"moves":[{"vm":1},"x"],"notes":[5],"moving":{"kv":7}})",
      R"({"ok":true,"moves":{"vm":"kv"},"notes":"n","moving":[1]})",
  };
  const std::vector<std::vector<std::string>> commands = {
      {"ha", "status", "--config", config},
      {"ha", "balance", "--config", config},
      {"ha", "move", "kv", "a", "--config", config, "--timeout-s", "0.5"},
      {"ha", "evacuate", "a", "--config", config, "--timeout-s", "0.5"},
  };
  int n = 0;
  for (const std::string& answer : answers) {
    FakeAgent agent(dir.File("agent.sock"), answer);
    ASSERT_TRUE(agent.ok());
    for (const auto& args : commands) {
      auto r = RunFerry(args, dir.File("run-" + std::to_string(n++)), 20000);
      SCOPED_TRACE(answer + " -> ferry " + args[0] + " " + args[1] + ": " + r.err);
      EXPECT_TRUE(r.code == 0 || r.code == 1) << "exit " << r.code;
      EXPECT_EQ(r.err.find("terminate called"), std::string::npos);
      if (args[1] == "status") {
        EXPECT_NE(r.out.find("cluster seen from"), std::string::npos) << r.out;
      }
    }
  }
}

// The VM commands against a VMM whose answers lack fields or have other types (a VMM of
// another version): an error with its reason and exit code 1, never a crash. Before, the
// printers read a const json's missing keys (undefined behaviour) and let get<>()'s
// exception end the process (exit 134).
TEST(CliAnswers, AVmmsAnswerOfAnyShapeIsAnExitCodeNeverACrash) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string sock = dir.File("vm.sock");
  const std::vector<std::string> answers = {R"({"ok":true})", R"({"ok":true,"state":5,"report":"x","replication":[1]})",
                                            R"({"ok":true,"latency_us":"fast","passed":"yes","epoch":-1})"};
  const std::vector<std::vector<std::string>> commands = {
      {"status", "--api", sock}, {"pause", "--api", sock}, {"verify", "--api", sock}, {"promote", "--api", sock},
      // the address goes to the fake VMM only (127.x, as every test address)
      {"migrate", "--api", sock, "--to", "127.0.0.1:9", "--insecure"},
      {"replicate", "--api", sock, "--to", "127.0.0.1:9", "--insecure"}};
  int n = 0;
  for (const std::string& answer : answers) {
    FakeAgent vmm(sock, answer);
    ASSERT_TRUE(vmm.ok());
    for (const auto& args : commands) {
      auto r = RunFerry(args, dir.File("run-" + std::to_string(n++)), 20000);
      SCOPED_TRACE(answer + " -> ferry " + args[0] + ": " + r.err);
      EXPECT_TRUE(r.code == 0 || r.code == 1) << "exit " << r.code;
      EXPECT_EQ(r.err.find("terminate called"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace ferry::e2e
