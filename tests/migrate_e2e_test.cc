// Live migration on real KVM: memcheck migrated on loopback and between two namespace hosts
// passes full verification on the destination; wrong or missing keys are refused on both
// ends; a killed destination, a corrupted and a truncated stream leave the source running and
// intact with nothing running twice; a dirtier faster than the link converges by throttling,
// and without auto-converge gives up at its deadline with the source running.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <optional>

#include "e2e_util.h"
#include "fault_proxy.h"
#include "test_hosts.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

// A `ferry incoming` process and the port it bound.
struct Destination {
  std::unique_ptr<Process> process;
  std::string address;  // HOST:PORT
};

Destination StartIncoming(const TempDir& dir, const std::string& name, const std::string& listen,
                          std::vector<std::string> extra = {}, const TestHosts* hosts = nullptr, int host = 0) {
  std::vector<std::string> argv = {FerryBin(), "incoming", "--listen", listen, "--api", dir.File(name + ".sock")};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (hosts) argv = hosts->In(host, argv);
  Destination d{std::make_unique<Process>(argv, dir.File(name)), ""};
  const std::string marker = "listening on ";
  EXPECT_TRUE(WaitUntil([&] { return d.process->Stderr().find(marker) != std::string::npos; }, 10000)) << d.process->Stderr();
  std::string err = d.process->Stderr();
  size_t at = err.find(marker);
  if (at != std::string::npos) d.address = err.substr(at + marker.size(), err.find_first_of(" \n", at + marker.size()) - at - marker.size());
  return d;
}

std::unique_ptr<Process> StartGuest(const TempDir& dir, const std::string& name, const std::string& guest,
                                    const std::string& mem, std::vector<std::string> guest_args = {},
                                    const TestHosts* hosts = nullptr, int host = 0) {
  std::vector<std::string> argv = {FerryBin(), "run", GuestPath(guest), "--mem", mem, "--vcpus", "2", "--api",
                                   dir.File(name + ".sock")};
  if (!guest_args.empty()) {
    argv.push_back("--");
    argv.insert(argv.end(), guest_args.begin(), guest_args.end());
  }
  if (hosts) argv = hosts->In(host, argv);
  return std::make_unique<Process>(argv, dir.File(name));
}

// Waits until memcheck has written a good part of its pages, so a migration carries real data.
void AwaitMemcheckBusy(const std::string& sock) {
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 30000).ok());
  ASSERT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && std::stoull((*r)["report"]["fields"].value("writes", std::string("0"))) > 20000;
  }, 30000));
}

void ExpectVerifies(const std::string& sock) {
  auto v = Api(sock, {{"op", "verify"}, {"timeout_ms", 60000}}, 70000);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_TRUE((*v)["passed"].get<bool>()) << (*v)["report"]["text"];
}

void ExpectRunning(const std::string& sock) {
  auto s = Api(sock, {{"op", "status"}});
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ((*s)["state"], "running");
}

TEST(MigrateE2E, MemcheckOnLoopbackPassesVerification) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  auto r = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--verify", "--json"}, dir.File("mig"));
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  json s = LastJsonLine(r.out);
  EXPECT_TRUE(s["converged"].get<bool>());
  EXPECT_TRUE(s["verify_passed"].get<bool>()) << s["verify_report"];
  EXPECT_GT(s["downtime_ms"].get<double>(), 0);
  EXPECT_GT(s["bytes"].get<uint64_t>(), 64u << 20);  // memcheck's pages really travelled
  EXPECT_GE(s["rounds"].get<int>(), 1);
  // The source exits only after the destination confirmed, and cleanly.
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  ExpectRunning(dir.File("dst.sock"));
  ExpectVerifies(dir.File("dst.sock"));
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst.process->Wait(20000), 0) << dst.process->Stderr();
}

TEST(MigrateE2E, MemcheckBetweenNamespaceHostsWithKey) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2);
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string key = WriteKey(dir, "key", "a-shared-secret-of-enough-length");
  auto src = StartGuest(dir, "src", "memcheck", "128M", {}, hosts->get(), 0);
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", (*hosts)->address(1) + ":4410", {"--key", key}, hosts->get(), 1);
  ASSERT_EQ(dst.address, (*hosts)->address(1) + ":4410");
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key",
                                     key, "--streams", "3", "--verify", "--json"}), dir.File("mig"));
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  json s = LastJsonLine(r.out);
  EXPECT_TRUE(s["verify_passed"].get<bool>()) << s["verify_report"];
  EXPECT_EQ(s["destination"], dst.address);
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  ExpectVerifies(dir.File("dst.sock"));
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst.process->Wait(20000), 0);
}

TEST(MigrateE2E, KeylessDestinationRefusesAnotherHost) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2);
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  auto src = StartGuest(dir, "src", "hello", "32M", {"mode=spin"}, hosts->get(), 0);
  ASSERT_TRUE(WaitForReport(dir.File("src.sock"), "guest", 20000).ok());
  auto dst = StartIncoming(dir, "dst", (*hosts)->address(1) + ":4411", {}, hosts->get(), 1);
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address}),
                    dir.File("mig"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("loopback peers only"), std::string::npos) << r.err;
  EXPECT_TRUE(WaitUntil([&] { return dst.process->Stderr().find("loopback peers only") != std::string::npos; }, 5000))
      << dst.process->Stderr();
  ExpectRunning(dir.File("src.sock"));
  EXPECT_EQ(dst.process->Stderr().find("VM received"), std::string::npos);
}

TEST(MigrateE2E, WrongKeyOrNoKeyIsRefusedOnBothEnds) {
  REQUIRE_KVM();
  TempDir dir;
  std::string good = WriteKey(dir, "good", "the-destination-key-0123456789");
  std::string bad = WriteKey(dir, "bad", "some-other-key-0123456789abcdef");
  auto src = StartGuest(dir, "src", "memcheck", "64M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0", {"--key", good});

  auto wrong = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key", bad}, dir.File("wrong"));
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("authentication failed"), std::string::npos) << wrong.err;
  auto none = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", dst.address}, dir.File("none"));
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("key"), std::string::npos) << none.err;
  EXPECT_TRUE(WaitUntil([&] {
    std::string e = dst.process->Stderr();
    return e.find("authentication failed") != std::string::npos && e.find("authentication required") != std::string::npos;
  }, 5000)) << dst.process->Stderr();
  // Nothing was loaded there; the source runs on, intact; the listener still waits.
  EXPECT_EQ(dst.process->Stderr().find("VM received"), std::string::npos);
  EXPECT_EQ(dst.process->Wait(100), -1);
  ExpectRunning(dir.File("src.sock"));
  ExpectVerifies(dir.File("src.sock"));
  dst.process->Signal(SIGTERM);
  EXPECT_EQ(dst.process->Wait(10000), 1) << dst.process->Stderr();
}

// Runs a migration slowed to ~3 s and returns it while in flight.
std::unique_ptr<Process> StartSlowMigration(const TempDir& dir, const std::string& to) {
  return std::make_unique<Process>(std::vector<std::string>{FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", to,
                                                            "--bandwidth", "40M", "--json"},
                                   dir.File("mig"));
}

TEST(MigrateE2E, KilledDestinationLeavesSourceRunningIntact) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  auto mig = StartSlowMigration(dir, dst.address);
  ASSERT_TRUE(WaitUntil([&] { return dst.process->Wait(0) == -1 && mig->Wait(0) == -1; }, 1000));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  ASSERT_EQ(mig->Wait(0), -1) << "the migration finished before the kill: " << mig->Stdout();
  dst.process->Signal(SIGKILL);
  EXPECT_EQ(dst.process->Wait(5000), 128 + SIGKILL);
  EXPECT_EQ(mig->Wait(30000), 1) << mig->Stderr();
  EXPECT_NE(mig->Stderr().find("failed"), std::string::npos) << mig->Stderr();
  ExpectRunning(dir.File("src.sock"));
  ExpectVerifies(dir.File("src.sock"));
  auto st = Api(dir.File("src.sock"), {{"op", "status"}});
  ASSERT_TRUE(st.ok());
}

// A stream damaged in flight (data stream 0, 4 MB in): the destination refuses it with a
// clear error and exits; the source runs on and passes verification.
void DamagedStream(FaultProxy::Fault fault, const std::string& dest_message) {
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  uint16_t port = static_cast<uint16_t>(std::stoi(dst.address.substr(dst.address.rfind(':') + 1)));
  FaultProxy proxy(port, /*victim_connection=*/1, /*offset=*/4u << 20, fault);
  auto r = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", "127.0.0.1:" + std::to_string(proxy.port())},
                    dir.File("mig"));
  EXPECT_TRUE(proxy.fired());
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(dst.process->Wait(30000), 1) << dst.process->Stderr();
  EXPECT_NE(dst.process->Stderr().find(dest_message), std::string::npos) << dst.process->Stderr();
  EXPECT_EQ(dst.process->Stderr().find("VM received"), std::string::npos);
  ExpectRunning(dir.File("src.sock"));
  ExpectVerifies(dir.File("src.sock"));
}

TEST(MigrateE2E, CorruptedStreamIsRefusedAndSourceRunsOn) {
  REQUIRE_KVM();
  DamagedStream(FaultProxy::Fault::kFlipByte, "checksum mismatch");
}

TEST(MigrateE2E, TruncatedStreamIsRefusedAndSourceRunsOn) {
  REQUIRE_KVM();
  DamagedStream(FaultProxy::Fault::kCut, "truncated");
}

// Migrates the dirtier (150 MB/s) over a link capped at `bandwidth`, uncompressed so the cap
// really binds.
CommandResult MigrateOverSlowLink(const TempDir& dir, const std::string& to, const std::string& bandwidth,
                                  const std::string& deadline_s, std::vector<std::string> extra) {
  std::vector<std::string> args = {"migrate", "--api", dir.File("src.sock"), "--to", to, "--bandwidth", bandwidth,
                                   "--deadline-s", deadline_s, "--compress", "none", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunFerry(args, dir.File("mig"), 90000);
}

TEST(MigrateE2E, DirtierFasterThanTheLinkConvergesByThrottling) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "dirtier", "128M", {"rate_mbps=150", "wss_mib=64"});
  ASSERT_TRUE(WaitForReport(dir.File("src.sock"), "achieved_mbps", 20000).ok());
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  auto r = MigrateOverSlowLink(dir, dst.address, "60M", "60", {});
  ASSERT_EQ(r.code, 0) << r.err;
  json s = LastJsonLine(r.out);
  EXPECT_TRUE(s["converged"].get<bool>());
  EXPECT_GT(s["throttle_max"].get<int>(), 0) << r.out;
  EXPECT_LT(s["total_ms"].get<double>(), 60000);
  EXPECT_EQ(src->Wait(20000), 0);
  ExpectRunning(dir.File("dst.sock"));
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
}

TEST(MigrateE2E, WithoutAutoConvergeItGivesUpAtTheDeadlineAndTheSourceRunsOn) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "dirtier", "128M", {"rate_mbps=150", "wss_mib=64"});
  ASSERT_TRUE(WaitForReport(dir.File("src.sock"), "achieved_mbps", 20000).ok());
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  auto r = MigrateOverSlowLink(dir, dst.address, "30M", "4", {"--no-auto-converge"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("did not converge"), std::string::npos) << r.err;
  ExpectRunning(dir.File("src.sock"));
  auto st = Api(dir.File("src.sock"), {{"op", "throttle"}, {"percent", 0}});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(dst.process->Wait(20000), 1) << dst.process->Stderr();
  EXPECT_NE(dst.process->Stderr().find("gave up"), std::string::npos) << dst.process->Stderr();
}

}  // namespace
}  // namespace ferry::e2e
