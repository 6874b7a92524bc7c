// Drills without a cluster: names, outcomes, refusals that touch nothing, and the one fault
// primitive that needs no guest (cutting a single path), on two namespaces the test makes.
#include "ferry/ha/drill.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "drill_faults.h"
#include "ferry/base/unique_fd.h"
#include "ferry/ha/subprocess.h"

namespace ferry::ha {
namespace {

TEST(Drill, EveryFaultHasANameThatParsesBackAndAnExpectedOutcome) {
  for (int i = 0; i < kFaultCount; ++i) {
    const auto f = static_cast<Fault>(i);
    EXPECT_EQ(ParseFault(FaultName(f)), f);
  }
  EXPECT_EQ(ParseFault("kill"), std::nullopt);
  EXPECT_EQ(Expected(Fault::kKillStandby), Outcome::kReprotect);
  EXPECT_EQ(Expected(Fault::kCutReplication), Outcome::kReprotect);
  EXPECT_EQ(Expected(Fault::kStopAgent), Outcome::kNothing);
  EXPECT_EQ(Expected(Fault::kStopAgent, 0, 60), Outcome::kNothing) << "without a lease a hung agent's VM serves on";
  EXPECT_EQ(Expected(Fault::kStopAgent, 2000, 2), Outcome::kNothing) << "back within the lease";
  EXPECT_EQ(Expected(Fault::kStopAgent, 2000, 10), Outcome::kFailover) << "hung past the lease: failed over";
  EXPECT_EQ(Expected(Fault::kKillVm, 2000, 10), Outcome::kFailover);
  EXPECT_EQ(Expected(Fault::kKillHostMidMove), Outcome::kFailover);
  EXPECT_EQ(Expected(Fault::kRestartCorosync), Outcome::kFailover);
  EXPECT_EQ(ParseFault("restart-corosync"), Fault::kRestartCorosync);
  EXPECT_FALSE(TargetsVm(Fault::kRestartCorosync));
  EXPECT_TRUE(TargetsVm(Fault::kKillStandby));
  EXPECT_FALSE(TargetsVm(Fault::kCutCorosync));
  EXPECT_TRUE(TargetsVm(Fault::kStopVm));
  EXPECT_EQ(ParseFault("stop-vm"), Fault::kStopVm);
}

// A hung primary VMM: nothing within the standby's io timeout, re-protection once it gave up
// on it, a failover once its agent killed it; a stop near a bound is refused, saying the bounds.
TEST(Drill, AStoppedVmmsOutcomeFollowsTheTimeoutsAndABorderlineStopIsRefused) {
  ClusterConfig c;  // io_timeout_ms 1000, hung_vmm_ms 10000
  EXPECT_EQ(StopVmOutcome(c, 0.3).value(), Outcome::kNothing);
  EXPECT_EQ(StopVmOutcome(c, 5).value(), Outcome::kReprotect);
  EXPECT_EQ(StopVmOutcome(c, 8).value(), Outcome::kReprotect);
  EXPECT_EQ(StopVmOutcome(c, 13).value(), Outcome::kFailover);
  for (double s : {0.8, 1.5, 9.0, 10.0, 12.5}) {
    auto r = StopVmOutcome(c, s);
    ASSERT_FALSE(r.ok()) << s << " s";
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("from 13.0 s (failover)"), std::string::npos) << r.status().message();
  }
  c.hung_vmm_ms = 0;  // never killed: any long stop is a re-protection
  EXPECT_EQ(StopVmOutcome(c, 600).value(), Outcome::kReprotect);
}

// A stopped agent: without a lease nothing, however long; with one, nothing within the lease,
// a failover past it by the margin, and a stop between refused (its VMMs fenced themselves,
// and the VM may or may not move).
TEST(Drill, AStoppedAgentsOutcomeFollowsTheLeaseAndABorderlineStopIsRefused) {
  ClusterConfig c;
  EXPECT_EQ(StopAgentOutcome(c, 600).value(), Outcome::kNothing);
  c.lease_ms = 2000;
  EXPECT_EQ(StopAgentOutcome(c, 1.5).value(), Outcome::kNothing);
  EXPECT_EQ(StopAgentOutcome(c, 5.5).value(), Outcome::kFailover);
  for (double s : {1.8, 2.5, 4.0, 5.0}) {
    auto r = StopAgentOutcome(c, s);
    ASSERT_FALSE(r.ok()) << s << " s";
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("more than 5.0 s (failover)"), std::string::npos) << r.status().message();
  }
}

ClusterConfig Config() {
  auto c = ClusterConfig::Parse(nlohmann::json::parse(R"({
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/ferry-drill-test-none-a"},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/ferry-drill-test-none-b"}],
    "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100,"service":"127.31.1.1:7000"}],
    "client_netns": "ferry-none"})"));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

TEST(Drill, ABadTargetOrNoClusterIsAnErrorAndNothingIsTouched) {
  auto c = Config();
  DrillOptions o;
  o.fault = Fault::kKillHost;
  o.target = "zz";
  auto r = RunDrill(c, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  o.fault = Fault::kKillStandby;
  o.target = "a";  // a host where a VM is expected
  EXPECT_EQ(RunDrill(c, o).status().code(), ErrorCode::kInvalidArgument);
  o.target = "kv";
  r = RunDrill(c, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound) << r.status().message();  // no agent answers
  o.fault = Fault::kStopVm;  // a stop that could end either way: refused before any agent is asked
  o.stop_s = 10;
  r = RunDrill(c, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << r.status().message();
  EXPECT_NE(r.status().message().find("either way"), std::string::npos) << r.status().message();
}

TEST(DrillFaults, HostFaultsNeedATestClustersNamespace) {
  HostConfig h;
  h.name = "a";
  EXPECT_EQ(CutPort(h, "tcp", 7100).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(KillHost(h).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(CorosyncPid(h).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(StartCorosync(h).code(), ErrorCode::kInvalidArgument) << "no corosync_start command";
}

TEST(DrillFaults, TheCorosyncStartCommandRunsDetachedWithItsOutputInTheHostsDir) {
  char tmpl[] = "/tmp/ferry-drill-start-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  HostConfig h;
  h.name = "a";
  h.dir = tmpl;
  h.corosync_start = {"sh", "-c", "echo started in session $(ps -o sid= -p $$)"};
  ASSERT_TRUE(StartCorosync(h).ok());
  // The log once it holds `want`, waiting up to 10 s: under a loaded machine (a build beside
  // it) sh and ps took over 2 s to start.
  auto log_with = [&](const std::string& want) {
    std::string got;
    for (int i = 0; i < 500 && got.find(want) == std::string::npos; ++i) {
      ::usleep(20000);
      std::ifstream in(h.dir + "/corosync-start.log");
      got.assign(std::istreambuf_iterator<char>(in), {});
    }
    return got;
  };
  const std::string got = log_with("started");
  EXPECT_NE(got.find("started in session"), std::string::npos) << got;
  EXPECT_EQ(got.find("session " + std::to_string(::getsid(0))), std::string::npos) << "not detached: " << got;
  // Detached, a command that cannot run is no error here, so it says so in its log. Waited
  // for before the directory goes: its process wrote the log while remove_all ran, and CI
  // failed with "cannot remove: Directory not empty". It wrote nothing before.
  h.corosync_start = {"/nonexistent/corosync"};
  EXPECT_TRUE(StartCorosync(h).ok());
  const std::string failed = log_with("cannot run /nonexistent/corosync (errno 2)");
  EXPECT_NE(failed.find("cannot run /nonexistent/corosync (errno 2)"), std::string::npos) << failed;
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  EXPECT_FALSE(ec) << ec.message();
}

TEST(Drill, TheConfigTakesACorosyncStartCommandAndRefusesAMalformedOne) {
  auto parse = [](const char* start) {
    return ClusterConfig::Parse(nlohmann::json::parse(std::string(R"({"hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1",
      "dir":"/tmp/x","corosync_start":)") + start + "}]}"));
  };
  auto ok = parse(R"(["systemctl","start","corosync"])");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->hosts[0].corosync_start, (std::vector<std::string>{"systemctl", "start", "corosync"}));
  EXPECT_EQ(parse("[]").status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse(R"("systemctl start corosync")").status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse(R"([1, 2])").status().code(), ErrorCode::kInvalidArgument);
}

// Two namespaces joined by a veth pair, 127.x addresses, as test clusters are made.
class TwoHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to make network namespaces";
    const std::string id = std::to_string(::getpid() % 100000);
    a_ = "ferry-dt-a" + id;
    b_ = "ferry-dt-b" + id;
    va_ = "fdta" + id;
    vb_ = "fdtb" + id;
    ASSERT_EQ(RunQuiet({"ip", "netns", "add", a_}), 0);
    made_a_ = true;
    ASSERT_EQ(RunQuiet({"ip", "netns", "add", b_}), 0);
    made_b_ = true;
    ASSERT_EQ(RunQuiet({"ip", "link", "add", va_, "netns", a_, "type", "veth", "peer", "name", vb_, "netns", b_}), 0);
    for (const auto& [ns, dev, addr] : {std::tuple{a_, va_, "127.77.0.1/24"}, std::tuple{b_, vb_, "127.77.0.2/24"}}) {
      ASSERT_EQ(RunQuiet({"ip", "-n", ns, "link", "set", "lo", "up"}), 0);
      ASSERT_EQ(RunQuiet({"ip", "-n", ns, "link", "set", dev, "up"}), 0);
      ASSERT_EQ(RunQuiet({"ip", "-n", ns, "addr", "add", addr, "dev", dev}), 0);
      ASSERT_EQ(RunQuiet({"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"}), 0);
      ASSERT_EQ(RunQuiet({"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf." + dev + ".route_localnet=1"}), 0);
      ASSERT_EQ(RunQuiet({"ip", "-n", ns, "route", "del", "127.0.0.0/8", "table", "local"}), 0);
    }
    host_.name = "a";
    host_.netns = a_;
    host_.uplink = va_;
  }
  void TearDown() override {
    if (made_a_) (void)RunQuiet({"ip", "netns", "del", a_});
    if (made_b_) (void)RunQuiet({"ip", "netns", "del", b_});
  }
  // Connects from a to b's port, from inside a's namespace (a child that joins it).
  bool Connects(uint16_t port) {
    std::string out;
    RunQuiet({"ip", "netns", "exec", a_, "python3", "-c",
              "import socket\ns=socket.socket()\ns.settimeout(2)\ntry:\n s.connect(('127.77.0.2'," + std::to_string(port) +
                  "))\n print('yes')\nexcept Exception:\n print('no')\n"},
             &out);
    return out.rfind("yes", 0) == 0;
  }
  std::string a_, b_, va_, vb_;
  bool made_a_ = false, made_b_ = false;
  HostConfig host_;
};

TEST_F(TwoHosts, CuttingOnePortLeavesTheOthersAndHealingRestoresIt) {
  // Listeners in b on two ports, for the length of the test.
  std::string script = "import socket,time\nls=[]\nfor p in (7100,7101):\n s=socket.socket()\n s.bind(('127.77.0.2',p))\n s.listen(16)\n ls.append(s)\ntime.sleep(20)\n";
  pid_t server = fork();
  ASSERT_GE(server, 0);
  if (server == 0) {
    execlp("ip", "ip", "netns", "exec", b_.c_str(), "python3", "-c", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool up = false;
  for (int i = 0; i < 100 && !(up = Connects(7101)); ++i) ::usleep(50 * 1000);
  ASSERT_TRUE(up) << "the listeners never came up";
  EXPECT_TRUE(Connects(7100));
  ASSERT_TRUE(CutPort(host_, "tcp", 7100).ok());
  EXPECT_FALSE(Connects(7100)) << "the cut path still connects";
  EXPECT_TRUE(Connects(7101)) << "a cut must touch only its port";
  ASSERT_TRUE(HealPort(host_, "tcp", 7100).ok());
  EXPECT_TRUE(Connects(7100));
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);
}

}  // namespace
}  // namespace ferry::ha
