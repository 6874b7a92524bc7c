// The real executor's process handling, with a stand-in for the ferry binary (a script that
// execs sleep): children get none of the agent's descriptors, their end is reaped and
// reported, and a child that never serves an API is probed as "not answering yet".
#include "ferry/ha/vmm_executor.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "ferry/base/unique_fd.h"
#include "ferry/vmhost/api_client.h"
#include "ferry/vmhost/api_server.h"

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

// Whether `pid` is blocked in nanosleep or clock_nanosleep (x86-64 syscalls 35 and 230).
bool Sleeping(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/syscall");
  std::string nr;
  f >> nr;
  return nr == "35" || nr == "230";
}

std::string Exe(pid_t pid) {
  char buf[256] = {};
  ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, n) : "";
}

// Probes until `pred` holds of the one instance, for up to 5 s (a probe waits 100 ms at most;
// an answer too late for one is read by a later one); the last probe's instance.
Instance ProbeUntil(VmmExecutor& exec, const std::function<bool(const Instance&)>& pred) {
  Instance last;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    auto local = exec.Probe();
    EXPECT_EQ(local.size(), 1u);
    if (local.size() != 1) return last;
    last = local[0];
    if (pred(last)) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "the probe never saw what was expected";
  return last;
}

// Kills vm and reaps what ended within 5 s.
std::vector<Ended> KillAndReap(VmmExecutor& exec, const std::string& vm) {
  exec.Kill(vm);
  std::vector<Ended> ended;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (ended.empty() && std::chrono::steady_clock::now() < deadline) {
    ended = exec.Reap();
    if (ended.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return ended;
}

// A two-host config with a watchdog lease whose hosts share `dir`: the VM kv, plus `more_vms`
// (JSON objects, each with a leading comma).
ClusterConfig LeasedConfig(const std::string& dir, const std::string& more_vms = "") {
  auto c = ClusterConfig::Parse(nlohmann::json::parse(R"({"lease_ms": 1500,
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":")" + dir + R"("},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":")" + dir + R"("}],
    "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100})" + more_vms + "]}"));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? *c : ClusterConfig{};
}

// A temporary directory both hosts (a, b) of a two-host config use, with a stand-in for the
// ferry binary that only sleeps; all of it removed at the end.
struct SleeperHosts {
  std::string dir, fake;
  std::optional<ClusterConfig> config;
  explicit SleeperHosts(const std::string& name) {
    std::string tmpl = "/tmp/ferry-" + name + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return;
    dir = tmpl;
    fake = dir + "/fake-ferry";
    std::ofstream(fake) << "#!/bin/sh\nexec sleep 30\n";
    if (::chmod(fake.c_str(), 0755) != 0) return;
    auto c = ClusterConfig::Parse(nlohmann::json::parse(R"({
      "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":")" + dir + R"("},
                {"name":"b","nodeid":2,"address":"127.31.0.2","dir":")" + dir + R"("}],
      "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100}]})"));
    if (c.ok()) config = *c;
  }
  ~SleeperHosts() {
    for (const char* f : {"/fake-ferry", "/kv.log", "/kv.log.1", "/kv.sock", "/hung.log", "/hung.sock", "/chatty-ferry"}) {
      ::unlink((dir + f).c_str());
    }
    ::rmdir(dir.c_str());
  }
};

TEST(VmmExecutor, ChildrenInheritNoDescriptorOfTheAgentsAndTheirEndIsReaped) {
  SleeperHosts t("exec-test");
  ASSERT_TRUE(t.config.has_value());
  const std::string& fake = t.fake;
  const ClusterConfig* config = &*t.config;
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
  // Checked once the stand-in sleeps: while it starts, sleep(1) opens files of its own (its
  // locale's), and exec closes the shell's close-on-exec script a moment after /proc/PID/exe
  // already names sleep.
  while (!Sleeping(*pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(Sleeping(*pid)) << "the stand-in never slept";
  EXPECT_EQ(OpenFds(*pid), (std::set<int>{0, 1, 2})) << "only stdin and the log as stdout/stderr";

  // Not serving an API: probed as a primary that does not answer yet.
  auto local = exec.Probe();
  ASSERT_EQ(local.size(), 1u);
  EXPECT_TRUE(local[0].primary());
  EXPECT_FALSE(local[0].phase.has_value());
  EXPECT_EQ(local[0].generation, 1u);

  const std::vector<Ended> ended = KillAndReap(exec, "kv");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].vm, "kv");
  EXPECT_EQ(ended[0].how, "signal 9");
  EXPECT_FALSE(exec.pid("kv").has_value());
  EXPECT_TRUE(exec.Probe().empty());
}

// With a lease, a restarted agent adopts a VMM it did not start: found by its socket, watched
// through a pidfd, its lease renewed on every probe, its end reaped. The VMM here is an API
// server in the test answering for a sleeping process.
TEST(VmmExecutor, WithALeaseARunningVmmIsAdoptedLeasedWatchedAndReaped) {
  char dir_template[] = "/tmp/ferry-adopt-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  pid_t sleeper = fork();
  ASSERT_GE(sleeper, 0);
  if (sleeper == 0) {
    execlp("sleep", "sleep", "30", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::atomic<int> leases{0};
  auto server = vmhost::ApiServer::Start(dir + "/kv.sock", [&](const nlohmann::json& r, const vmhost::ApiEmit&) {
    if (r.value("op", "") == "lease") {
      ++leases;
      return nlohmann::json{{"ok", true}};
    }
    return nlohmann::json{{"ok", true}, {"state", "replicating"}, {"pid", sleeper}, {"ha", {{"generation", 3}, {"fenced", false}}},
                          {"replication", {{"state", "protected"}, {"standby", "127.31.0.2:7100"}, {"epochs", 9}}}};
  });
  ASSERT_TRUE(server.ok()) << server.status().message();
  const auto config = LeasedConfig(dir);
  ASSERT_EQ(config.vms.size(), 1u);
  {
    VmmExecutor exec(config, *config.Host("a"), "/nonexistent");
    EXPECT_EQ(exec.Adopt(), std::vector<std::string>{"kv"});
    EXPECT_EQ(exec.pid("kv"), sleeper);
    auto local = exec.Probe();
    ASSERT_EQ(local.size(), 1u);
    EXPECT_TRUE(local[0].Runs());
    EXPECT_EQ(local[0].generation, 3u);
    EXPECT_EQ(local[0].standby_host, "b");
    ProbeUntil(exec, [&](const Instance&) { return leases.load() >= 1; });  // probing renews the lease
    ProbeUntil(exec, [&](const Instance&) { return leases.load() >= 2; });
    EXPECT_EQ(exec.probe_connects(), 1u) << "one connection, kept";
    EXPECT_TRUE(exec.Reap().empty());
    const std::vector<Ended> ended = KillAndReap(exec, "kv");
    ASSERT_EQ(ended.size(), 1u);
    EXPECT_EQ(ended[0].vm, "kv");
    EXPECT_NE(ended[0].how.find("adopted"), std::string::npos) << ended[0].how;
  }
  ::waitpid(sleeper, nullptr, 0);  // ours (the test's child): reaped here
  (*server)->Stop();
  ::rmdir(dir.c_str());
}

// A standby the agent started, then promoted: its probe times out once (a loaded VMM). The
// report must still say primary, at the generation it last answered with, not answering: it
// used to say "standby" at the generation it started with, so the others saw no primary and
// promoted their replica beside the one still serving.
TEST(VmmExecutor, AProbeThatGetsNoAnswerReportsWhatTheVmmLastSaidNotWhatItStartedAs) {
  SleeperHosts t("probe-test");
  ASSERT_TRUE(t.config.has_value());
  const std::string& dir = t.dir;
  const std::string& fake = t.fake;
  const ClusterConfig* config = &*t.config;
  std::atomic<bool> promoted{false}, slow{false};
  {
    VmmExecutor exec(*config, *config->Host("b"), fake);
    ASSERT_TRUE(exec.StartStandby(*config->Vm("kv"), 1, "a").ok());
    // The VMM's API, answered here (the child only sleeps): a standby, then a promoted primary.
    auto server = vmhost::ApiServer::Start(dir + "/kv.sock", [&](const nlohmann::json&, const vmhost::ApiEmit&) {
      if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      if (!promoted) {
        return nlohmann::json{{"ok", true}, {"state", "standby"}, {"replication", {{"state", "replicating"}, {"committed_epoch", 5}}}};
      }
      return nlohmann::json{{"ok", true}, {"state", "running"}, {"ha", {{"generation", 2}, {"fenced", false}}}};
    });
    ASSERT_TRUE(server.ok()) << server.status().message();
    Instance i = ProbeUntil(exec, [](const Instance& i) { return i.standby_state.has_value(); });
    EXPECT_TRUE(i.standby());
    EXPECT_EQ(i.committed, 5u);
    promoted = true;
    ASSERT_TRUE(exec.Promote("kv", 2).ok());
    slow = true;  // promoted, and its very next probe gets no answer
    auto local = exec.Probe();
    ASSERT_EQ(local.size(), 1u);
    EXPECT_TRUE(local[0].primary()) << "promoted, then reported as the standby it last answered as";
    EXPECT_EQ(local[0].generation, 2u);
    EXPECT_FALSE(local[0].Runs());
    slow = false;  // the late answer is dropped with its connection; the next is read
    i = ProbeUntil(exec, [](const Instance& i) { return i.Runs(); });
    EXPECT_EQ(i.generation, 2u);
    slow = true;  // the next status answers after the probe's 1 s
    i = ProbeUntil(exec, [](const Instance& i) { return !i.phase.has_value(); });
    EXPECT_TRUE(i.primary()) << "a promoted primary that did not answer was reported as a standby";
    EXPECT_EQ(i.generation, 2u) << "reported at the generation it started with";
    EXPECT_FALSE(i.Runs());
    slow = false;
    ProbeUntil(exec, [](const Instance& i) { return i.Runs(); });
    (*server)->Stop();
    exec.Kill("kv");
  }
}

}  // namespace
}  // namespace ferry::ha

namespace ferry::ha {
namespace {

// The cluster's TLS settings reach the VMMs an agent starts ("{host}" is each host's own
// file), and a config that mixes kinds of protection is refused.
TEST(VmmExecutor, TheClustersCertificatesReachTheStandbyItStarts) {
  char dir_template[] = "/tmp/ferry-exec-tls-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string fake = dir + "/fake-ferry", argv_file = dir + "/argv";
  {
    std::ofstream f(fake);
    f << "#!/bin/sh\nprintf '%s\\n' \"$@\" > " << argv_file << "\nexec sleep 30\n";
  }
  ASSERT_EQ(::chmod(fake.c_str(), 0755), 0);
  const std::string hosts = R"("hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":")" + dir + R"("},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":")" + dir + R"("}],
    "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100}])";
  auto config = ClusterConfig::Parse(nlohmann::json::parse(
      R"({"tls_cert": "/etc/ferry/{host}.pem", "tls_key": "/etc/ferry/{host}.key", "tls_ca": "/etc/ferry/ca.pem", )" + hosts + "}"));
  ASSERT_TRUE(config.ok()) << config.status().message();
  {
    VmmExecutor exec(*config, *config->Host("b"), fake);
    ASSERT_TRUE(exec.StartStandby(*config->Vm("kv"), 1, "a").ok());
    std::string args;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (args.find("--tls-ca") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      std::ifstream in(argv_file);
      args.assign(std::istreambuf_iterator<char>(in), {});
    }
    EXPECT_NE(args.find("--tls-cert\n/etc/ferry/b.pem\n--tls-key\n/etc/ferry/b.key\n--tls-ca\n/etc/ferry/ca.pem\n"), std::string::npos)
        << args;
    EXPECT_EQ(args.find("--insecure"), std::string::npos);
    // Only the owner may become its primary: another holder of a cluster certificate may not.
    EXPECT_NE(args.find("--tls-peer-name\na\n"), std::string::npos) << args;
    EXPECT_FALSE(exec.StartStandby(*config->Vm("kv"), 1, "nobody").ok());
    exec.Kill("kv");
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (exec.Reap().empty() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (const char* bad : {R"("tls_cert": "/c.pem", )", R"("tls_cert": "/c", "tls_key": "/k", "tls_ca": "/ca", "key_file": "/x", )",
                          R"("key_file": "/x", "insecure": true, )", R"("insecure": "yes", )"}) {
    auto refused = ClusterConfig::Parse(nlohmann::json::parse(std::string("{") + bad + hosts + "}"));
    EXPECT_FALSE(refused.ok()) << bad;
  }
  for (const char* f : {"/fake-ferry", "/argv", "/kv.log", "/kv.img"}) ::unlink((dir + f).c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace ferry::ha

namespace ferry::ha {
namespace {

// A VMM that has stopped (its API never answers: a listening socket nobody accepts on, as a
// SIGSTOPped VMM's) beside one that answers: every probe still returns within its wait, the
// answering VMM's lease is renewed at every probe, and the silent one is reported not
// answering, with how long it has been silent. Probed one after another with 1 s each, the
// stopped VMM held every probe (and the other's lease) up by a second.
TEST(VmmExecutor, AHungVmmCostsTheOthersNothingAndIsReportedSilent) {
  SleeperHosts t("hung-test");
  ASSERT_TRUE(t.config.has_value());
  const auto config = LeasedConfig(t.dir, R"(, {"name":"hung","guest":"kvstore.elf","primary":"a","backup":"b","port":7101})");
  ASSERT_EQ(config.vms.size(), 2u);
  std::atomic<int> leases{0};
  {
    VmmExecutor exec(config, *config.Host("a"), t.fake);
    ASSERT_TRUE(exec.StartPrimary(*config.Vm("kv"), 1).ok());
    ASSERT_TRUE(exec.StartPrimary(*config.Vm("hung"), 1).ok());
    auto server = vmhost::ApiServer::Start(t.dir + "/kv.sock", [&](const nlohmann::json& r, const vmhost::ApiEmit&) {
      if (r.value("op", "") == "lease") {
        ++leases;
        return nlohmann::json{{"ok", true}};
      }
      return nlohmann::json{{"ok", true}, {"state", "running"}, {"ha", {{"generation", 1}, {"fenced", false}}}};
    });
    ASSERT_TRUE(server.ok()) << server.status().message();
    const std::string hung_path = t.dir + "/hung.sock";
    UniqueFd hung(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, hung_path.c_str(), hung_path.size());
    ASSERT_EQ(::bind(hung.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(hung.get(), 1), 0);

    const auto start = std::chrono::steady_clock::now();
    int probes = 0;
    uint64_t longest_ms = 0, silent_ms = 0;
    bool kv_runs = true;
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(3000)) {
      const auto t0 = std::chrono::steady_clock::now();
      auto local = exec.Probe();
      longest_ms = std::max<uint64_t>(
          longest_ms, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
      ++probes;
      ASSERT_EQ(local.size(), 2u);
      for (const auto& i : local) {
        if (i.vm == "hung") {
          EXPECT_FALSE(i.Runs());
          EXPECT_GE(i.silent_ms, silent_ms) << "silence only grows";
          silent_ms = i.silent_ms;
        } else if (probes > 5) {
          kv_runs = kv_runs && i.Runs() && i.silent_ms == 0;
        }
      }
    }
    EXPECT_TRUE(kv_runs) << "the answering VMM looked silent beside the hung one";
    EXPECT_LT(longest_ms, 600u) << "a probe waited on the hung VMM";
    EXPECT_GE(probes, 10);
    EXPECT_GE(leases.load(), probes / 2) << "the answering VMM's lease was renewed at " << leases.load() << " of " << probes << " probes";
    EXPECT_GE(silent_ms, 1800u) << "the hung VMM was not reported silent";
    (*server)->Stop();
    ::unlink(hung_path.c_str());
  }
}

// A worker promotes the standby while the agent's thread probes it, its status answers slow
// (150 ms, past a probe's wait) so questions are out across the promotion: once Promote() has returned, no probe may
// report the VMM as the standby it was (an answer to a question asked before the promotion says
// what the VMM was; taken, it made the others see no primary and promote beside it).
TEST(VmmExecutor, OnceAPromotionReturnedNoProbeReportsTheStandbyItWas) {
  SleeperHosts t("told-test");
  ASSERT_TRUE(t.config.has_value());
  const ClusterConfig* config = &*t.config;
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> promoted{false};
    VmmExecutor exec(*config, *config->Host("b"), t.fake);
    ASSERT_TRUE(exec.StartStandby(*config->Vm("kv"), 1, "a").ok());
    auto server = vmhost::ApiServer::Start(t.dir + "/kv.sock", [&](const nlohmann::json& r, const vmhost::ApiEmit&) {
      if (r.value("op", "") == "promote") {
        promoted = true;
        return nlohmann::json{{"ok", true}, {"epoch", 5}, {"promote_ms", 1.0}};
      }
      const bool was = promoted.load();  // the answer is what the VMM was when it was asked
      std::this_thread::sleep_for(std::chrono::milliseconds(150));  // longer than a probe waits
      if (!was) return nlohmann::json{{"ok", true}, {"state", "standby"}, {"replication", {{"state", "replicating"}, {"committed_epoch", 5}}}};
      return nlohmann::json{{"ok", true}, {"state", "running"}, {"ha", {{"generation", 2}, {"fenced", false}}}};
    });
    ASSERT_TRUE(server.ok()) << server.status().message();
    ProbeUntil(exec, [](const Instance& i) { return i.standby_state.has_value(); });
    std::atomic<bool> returned{false};
    std::thread worker([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(10 + 37 * round));
      EXPECT_TRUE(exec.Promote("kv", 2).ok());
      returned = true;
    });
    int after = 0;
    for (int i = 0; i < 200 && after < 8; ++i) {
      const bool done = returned.load();
      auto local = exec.Probe();
      ASSERT_EQ(local.size(), 1u);
      if (!done) continue;
      ++after;
      EXPECT_TRUE(local[0].primary()) << "round " << round << ": reported the standby it was after the promotion returned";
      EXPECT_EQ(local[0].generation, 2u);
    }
    worker.join();
    EXPECT_GE(after, 8);
    EXPECT_TRUE(ProbeUntil(exec, [](const Instance& i) { return i.Runs(); }).Runs());
    (*server)->Stop();
    exec.Kill("kv");
  }
}

// A restarted agent finds a VMM that listens but answers nothing (hung, or stopped): it is
// adopted all the same (by its socket's peer, or with its backlog full by its socket's inode),
// reported as not answering as what its command line says it was started as, silent from its
// adoption (the hung-VMM rule kills it), and its end reaped. Left out, it stayed an orphan
// holding its socket, TAP and port.
void AdoptsAVmmThatAnswersNothing(const std::string& name, bool backlog_full) {
  SleeperHosts t(name);
  ASSERT_TRUE(t.config.has_value());
  const auto config = LeasedConfig(t.dir);
  ASSERT_EQ(config.vms.size(), 1u);
  const std::string sock = t.dir + "/kv.sock", script = t.dir + "/hung-vmm";
  std::ofstream(script) << "#!/bin/sh\nwhile :; do sleep 1 3>&-; done\n";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, sock.c_str(), sock.size());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // listens on the VM's socket and never accepts, as a stopped VMM (started as the agent starts one)
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 2) != 0) _exit(1);
    ::dup2(fd, 3);  // the one descriptor of it the shell keeps (fd may be 3 already)
    ::fcntl(3, F_SETFD, 0);
    execl("/bin/sh", "sh", script.c_str(), "standby", "--min-generation", "7", "--api", sock.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // The test's own child, ended and reaped on every path (a failed assertion included).
  struct Reaped {
    pid_t pid;
    std::string sock, script;
    int status = 0;
    void End() {
      if (pid <= 0) return;
      ::kill(pid, SIGKILL);  // ours; a no-op once the executor killed it
      ::waitpid(pid, &status, 0);
      pid = -1;
    }
    ~Reaped() {
      End();
      ::unlink(sock.c_str());
      ::unlink(script.c_str());
    }
  } reaped{child, sock, script};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (::access(sock.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<UniqueFd> queued;  // connections its backlog holds, until it takes no more
  for (int k = 0; backlog_full && k < 64; ++k) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ASSERT_EQ(errno, EAGAIN) << "connect: " << std::strerror(errno);
      break;
    }
    queued.push_back(std::move(fd));
  }
  {
    VmmExecutor exec(config, *config.Host("a"), "/nonexistent");
    EXPECT_EQ(exec.Adopt(), std::vector<std::string>{"kv"}) << "its listener: " << vmhost::ListenerPid(sock).status().message();
    EXPECT_EQ(exec.pid("kv"), child);
    Instance i = ProbeUntil(exec, [](const Instance& i) { return i.silent_ms >= 1500; });
    EXPECT_TRUE(i.standby()) << "its command line says standby";
    EXPECT_EQ(i.generation, 7u);
    EXPECT_FALSE(i.standby_state.has_value());
    const std::vector<Ended> ended = KillAndReap(exec, "kv");
    ASSERT_EQ(ended.size(), 1u);
    EXPECT_EQ(ended[0].vm, "kv");
  }
  reaped.End();
  EXPECT_TRUE(WIFSIGNALED(reaped.status) && WTERMSIG(reaped.status) == SIGKILL);
}

TEST(VmmExecutor, ARestartedAgentAdoptsAVmmThatAnswersNothing) { AdoptsAVmmThatAnswersNothing("hung-adopt", false); }

// Its backlog full, no connection reaches it: found by its listening socket's inode. Before,
// it was left an orphan.
TEST(VmmExecutor, ARestartedAgentAdoptsAVmmWhoseBacklogIsFull) { AdoptsAVmmThatAnswersNothing("full-adopt", true); }

// A VMM's socket that takes connections and reads requests but never answers (a hung or
// stopped VMM whose listener the kernel still serves): what it was asked, in order.
class DeafVmm {
 public:
  explicit DeafVmm(const std::string& path) : path_(path) {
    fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    ok_ = ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd_.get(), 16) == 0;
    if (ok_) thread_ = std::thread([this] { Serve(); });
  }
  ~DeafVmm() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  std::string heard() {
    std::lock_guard lock(mu_);
    return heard_;
  }

 private:
  void Serve() {
    std::vector<UniqueFd> conns;
    while (!stop_) {
      std::vector<pollfd> fds{{fd_.get(), POLLIN, 0}};
      for (const auto& c : conns) fds.push_back({c.get(), POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents) conns.emplace_back(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      for (size_t k = 1; k < fds.size(); ++k) {
        char buf[4096];
        if (!(fds[k].revents & POLLIN)) continue;
        const ssize_t n = ::read(fds[k].fd, buf, sizeof buf);
        std::lock_guard lock(mu_);
        if (n > 0) heard_.append(buf, n);
      }
    }
  }
  std::string path_;
  UniqueFd fd_;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::string heard_;
};

// Fence, unfence and release run on the agent's thread. To a VMM that answers its probes they
// wait for a slow answer (400 ms here); to one that does not they wait a probe's wait at most,
// and the request is delivered all the same (carried out if the VMM wakes). They waited 3 s
// each: the agent's API and every other VMM's lease renewal were held that long, at every tick
// that asked a hung VMM to unfence.
TEST(VmmExecutor, CommandsToAVmmThatDoesNotAnswerItsProbesWaitOnlyAProbesWait) {
  SleeperHosts t("deaf-test");
  ASSERT_TRUE(t.config.has_value());
  VmmExecutor exec(*t.config, *t.config->Host("a"), t.fake);
  ASSERT_TRUE(exec.StartPrimary(*t.config->Vm("kv"), 1).ok());
  const std::string sock = t.dir + "/kv.sock";
  auto ms_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  };
  {
    auto server = vmhost::ApiServer::Start(sock, [&](const nlohmann::json& r, const vmhost::ApiEmit&) {
      if (r.value("op", "") == "fence") {
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
        return nlohmann::json{{"ok", true}};
      }
      return nlohmann::json{{"ok", true}, {"state", "running"}, {"ha", {{"generation", 1}, {"fenced", false}}}};
    });
    ASSERT_TRUE(server.ok()) << server.status().message();
    ProbeUntil(exec, [](const Instance& i) { return i.Runs(); });
    const auto t0 = std::chrono::steady_clock::now();
    Status st = exec.Fence("kv");
    EXPECT_TRUE(st.ok()) << "an answering VMM's slow answer is waited for: " << st.message();
    EXPECT_GE(ms_since(t0), 400);
    (*server)->Stop();
    ::unlink(sock.c_str());
  }
  DeafVmm deaf(sock);
  ASSERT_TRUE(deaf.ok());
  ProbeUntil(exec, [](const Instance& i) { return !i.phase; });  // not answering
  for (int k = 0; k < 3; ++k) exec.Probe();
  std::vector<std::pair<std::string, std::function<Status()>>> commands{
      {"fence", [&] { return exec.Fence("kv"); }},
      {"unfence", [&] { return exec.Unfence("kv"); }},
      {"set_generation", [&] { return exec.ReleaseOutput("kv", 2); }}};
  for (const auto& [op, call] : commands) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(call().ok()) << op;
    EXPECT_LT(ms_since(t0), 1000) << op << " waited on a VMM that does not answer";
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (deaf.heard().find("set_generation") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string heard = deaf.heard();
  for (const char* op : {"\"fence\"", "\"unfence\"", "\"set_generation\""}) {
    EXPECT_NE(heard.find(op), std::string::npos) << op << " never reached the VMM's socket: " << heard;
  }
}

// A VMM that prints without end (a guest flooding its console; here a script standing in for
// the VMM, 10-20 MB/s): its log stays under vm_log_max_mb, with its last MiB kept as VM.log.1.
// Before, the log grew until the host's disk was full.
TEST(VmmExecutor, AVmmThatPrintsWithoutEndKeepsItsLogUnderTheCap) {
  SleeperHosts t("log-cap");
  ASSERT_TRUE(t.config.has_value());
  ClusterConfig config = *t.config;
  config.vm_log_max_mb = 2;
  const std::string chatty = t.dir + "/chatty-ferry";
  std::ofstream(chatty) << "#!/bin/sh\nline=$(head -c 4000 /dev/zero | tr '\\0' x)\n"
                           "while :; do for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do "
                           "echo \"$line\"; echo \"$line\"; echo \"$line\"; echo \"$line\"; done; sleep 0.01; done\n";
  ASSERT_EQ(::chmod(chatty.c_str(), 0755), 0);
  VmmExecutor exec(config, *config.Host("a"), chatty);
  ASSERT_TRUE(exec.StartPrimary(*config.Vm("kv"), 1).ok());
  const std::string log = t.dir + "/kv.log";
  uint64_t largest = 0;
  bool capped = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (std::chrono::steady_clock::now() < deadline) {
    exec.Probe();
    struct stat st {};
    if (::stat(log.c_str(), &st) == 0) largest = std::max<uint64_t>(largest, static_cast<uint64_t>(st.st_size));
    capped = capped || ::access((log + ".1").c_str(), F_OK) == 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(capped) << "the log never passed its cap (largest " << largest << " bytes)";
  EXPECT_LE(largest, 3u << 20) << "right after a probe, the log is under its cap and what was written since";
  struct stat old {};
  ASSERT_EQ(::stat((log + ".1").c_str(), &old), 0);
  EXPECT_GT(old.st_size, 0);
  EXPECT_LE(static_cast<uint64_t>(old.st_size), VmmExecutor::kLogTailKept);
  std::ifstream in(log);
  std::string first;
  std::getline(in, first);
  EXPECT_NE(first.find("passed 2 MiB"), std::string::npos) << first.substr(0, 200);
  EXPECT_EQ(KillAndReap(exec, "kv").size(), 1u);
}

}  // namespace
}  // namespace ferry::ha
