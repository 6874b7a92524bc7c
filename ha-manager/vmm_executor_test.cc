// The real executor's process handling, with a stand-in for the ferry binary (a script that
// execs sleep): children get none of the agent's descriptors, their end is reaped and
// reported, and a child that never serves an API is probed as "not answering yet".
#include "ferry/ha/vmm_executor.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "ferry/base/unique_fd.h"

namespace ferry::ha {
namespace {

std::set<int> OpenFds(pid_t pid) {
  std::set<int> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') out.insert(std::atoi(e->d_name));
    }
    closedir(d);
  }
  return out;
}

std::string Exe(pid_t pid) {
  char buf[256] = {};
  ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, n) : "";
}

TEST(VmmExecutor, ChildrenInheritNoDescriptorOfTheAgentsAndTheirEndIsReaped) {
  char dir_template[] = "/tmp/ferry-exec-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string fake = dir + "/fake-ferry";
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\nexec sleep 30\n";
  }
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  auto config = ClusterConfig::Parse(nlohmann::json::parse(R"({
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":")" + dir + R"("},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":")" + dir + R"("}],
    "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100}]})"));
  ASSERT_TRUE(config.ok()) << config.status().message();
  // Descriptors an agent holds without close-on-exec (asio's listening sockets, Corosync's).
  UniqueFd leaky(::open("/dev/null", O_RDONLY));
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_TRUE(leaky.valid() && sock.valid());

  VmmExecutor exec(*config, *config->Host("a"), fake);
  ASSERT_TRUE(exec.StartPrimary(*config->Vm("kv"), 1).ok());
  auto pid = exec.pid("kv");
  ASSERT_TRUE(pid.has_value());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Exe(*pid).find("sleep") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(Exe(*pid).find("sleep"), std::string::npos) << "the stand-in never ran";
  EXPECT_EQ(OpenFds(*pid), (std::set<int>{0, 1, 2})) << "only stdin and the log as stdout/stderr";

  // Not serving an API: probed as a primary that does not answer yet.
  auto local = exec.Probe();
  ASSERT_EQ(local.size(), 1u);
  EXPECT_TRUE(local[0].primary());
  EXPECT_FALSE(local[0].phase.has_value());
  EXPECT_EQ(local[0].generation, 1u);

  exec.Kill("kv");
  std::vector<Ended> ended;
  while (ended.empty() && std::chrono::steady_clock::now() < deadline) {
    ended = exec.Reap();
    if (ended.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].vm, "kv");
  EXPECT_EQ(ended[0].how, "signal 9");
  EXPECT_FALSE(exec.pid("kv").has_value());
  EXPECT_TRUE(exec.Probe().empty());
  ::unlink(fake.c_str());
  ::unlink((dir + "/kv.log").c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace ferry::ha
