// vmhost::ListenerPid for a listener whose backlog is full (a hung VMM that accepts nothing):
// no connection reaches it, so it is found by its socket's inode or by its command line.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/unique_fd.h"
#include "ferry/vmhost/api_client.h"

namespace ferry::vmhost {
namespace {

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof addr.sun_path - 1));
  return addr;
}

bool Within5s(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A process group of the test's own: a child listening on `path` (backlog 0) as descriptor
// 3 and then running `argv`, with connections queued until its backlog takes no more. Ended
// (the whole group) and reaped on every path.
class FullListener {
 public:
  FullListener(const std::string& path, std::vector<std::string> argv) : path_(path) {
    ::unlink(path.c_str());
    const sockaddr_un addr = Address(path);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 0) != 0) _exit(1);
      if (fd != 3 && (::dup2(fd, 3) != 3 || ::close(fd) != 0)) _exit(1);
      ::execvp(args[0], args.data());
      _exit(127);
    }
    ::setpgid(pid_, pid_);  // either side may set it first
    if (pid_ < 0 || !Within5s([&] { return ::access(path.c_str(), F_OK) == 0; })) return;
    for (int i = 0; i < 64; ++i) {
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        full_ = errno == EAGAIN;
        break;
      }
      queued_.push_back(std::move(fd));
    }
  }
  ~FullListener() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);  // the group the test made: the child and what it started
      ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(path_.c_str());
  }
  pid_t pid() const { return pid_; }
  bool full() const { return full_; }

 private:
  std::string path_;
  pid_t pid_ = -1;
  bool full_ = false;
  std::vector<UniqueFd> queued_;
};

std::string SocketPath(const char* name) { return "/tmp/ferry-listener-" + std::to_string(::getpid()) + "-" + name; }

// True once `parent` has a child whose name (/proc/PID/stat's comm) is `comm`: that child
// has run its exec.
bool HasChildNamed(pid_t parent, const std::string& comm) {
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = proc.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    std::ifstream in(proc.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    const size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && stat.substr(open + 1, close - open - 1) == comm) return true;
  }
  return false;
}

// Found by its socket's inode: its command line (`sleep 30`) names no socket. Where this
// machine's /proc shows a listening socket or a process's descriptors to nobody, it skips,
// saying which.
TEST(ListenerPid, AListenerWhoseBacklogIsFullIsFoundByItsSocketsInode) {
  const std::string path = SocketPath("inode");
  FullListener listener(path, {"sleep", "30"});
  ASSERT_GT(listener.pid(), 0);
  ASSERT_TRUE(listener.full()) << "the backlog never filled";
  auto pid = ListenerPid(path);
  if (!pid.ok()) {
    std::ifstream unix_sockets("/proc/net/unix");
    const std::string listed((std::istreambuf_iterator<char>(unix_sockets)), {});
    if (listed.find(path) == std::string::npos) GTEST_SKIP() << "this machine's /proc/net/unix does not list " << path;
    std::error_code ec;
    std::filesystem::directory_iterator fds("/proc/" + std::to_string(listener.pid()) + "/fd", ec);
    if (ec) GTEST_SKIP() << "this machine's /proc/PID/fd cannot be read: " << ec.message();
  }
  ASSERT_TRUE(pid.ok()) << pid.status().message();
  EXPECT_EQ(*pid, listener.pid());
}

// The listener and a child it started (which holds the socket too) both hold it: the one
// whose command line serves the socket, as a VMM's does, is the listener. Before, two holders
// were refused, and with a /proc that shows no socket's holder the VMM was not found at all.
TEST(ListenerPid, OfTwoHoldersTheOneStartedToServeTheSocketIsChosen) {
  const std::string path = SocketPath("two");
  FullListener listener(path, {"sh", "-c", "sleep 30 & wait", "ferry", "standby", "--api", path});
  ASSERT_GT(listener.pid(), 0);
  ASSERT_TRUE(listener.full()) << "the backlog never filled";
  ASSERT_TRUE(Within5s([&] { return HasChildNamed(listener.pid(), "sleep"); }));
  auto pid = ListenerPid(path);
  ASSERT_TRUE(pid.ok()) << pid.status().message();
  EXPECT_EQ(*pid, listener.pid());
}

// Two holders, neither started to serve the socket (nor one found by its command line): no
// guess, an error that says why.
TEST(ListenerPid, TwoHoldersNeitherStartedToServeTheSocketAreNotChosenBetween) {
  const std::string path = SocketPath("neither");
  FullListener listener(path, {"sh", "-c", "sleep 30 & wait"});
  ASSERT_GT(listener.pid(), 0);
  ASSERT_TRUE(listener.full()) << "the backlog never filled";
  ASSERT_TRUE(Within5s([&] { return HasChildNamed(listener.pid(), "sleep"); }));
  auto pid = ListenerPid(path);
  ASSERT_FALSE(pid.ok()) << "chose " << *pid;
  EXPECT_EQ(pid.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(pid.status().message().find("one was needed"), std::string::npos) << pid.status().message();
}

}  // namespace
}  // namespace ferry::vmhost
