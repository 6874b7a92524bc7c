// End-to-end on real KVM: ferry run with the memcheck and hello guests, the JSON API,
// pause/resume, and the CLI's errors. Every VMM is a child process killed and reaped by PID.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "e2e_util.h"

namespace ferry::e2e {
namespace {

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

class MemcheckVcpus : public ::testing::TestWithParam<int> {};

TEST_P(MemcheckVcpus, RunsAndPassesFullVerification) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("api.sock");
  const int vcpus = GetParam();
  Process vmm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "128M", "--vcpus", std::to_string(vcpus), "--api", sock},
              dir.File("vmm"));
  auto first = WaitForReport(sock, "verify_seq", 30000);
  ASSERT_TRUE(first.ok()) << first.status().message() << "\n" << vmm.Stderr();
  EXPECT_EQ((*first)["vcpus"], std::to_string(vcpus));
  // Let it write for a while, on every vCPU, then ask for a full pass.
  ASSERT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && std::stoull((*r)["report"]["fields"].value("writes", std::string("0"))) > 20000;
  }, 30000));
  auto verify = Api(sock, {{"op", "verify"}, {"timeout_ms", 30000}}, 40000);
  ASSERT_TRUE(verify.ok()) << verify.status().message();
  EXPECT_TRUE((*verify)["passed"].get<bool>()) << verify->dump();
  EXPECT_EQ((*verify)["report"]["fields"]["errors"], "0");
  EXPECT_NE((*verify)["report"]["fields"]["verify_pages"], "0");
  ASSERT_TRUE(Api(sock, {{"op", "stop"}}).ok());
  EXPECT_EQ(vmm.Wait(20000), 0) << vmm.Stderr();
  EXPECT_NE(vmm.Stdout().find("memcheck: verify ok"), std::string::npos) << vmm.Stdout();
}

INSTANTIATE_TEST_SUITE_P(Vcpus, MemcheckVcpus, ::testing::Values(1, 2, 4));

TEST(VmE2eTest, PauseStopsTheGuestAndResumeRestartsIt) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("api.sock");
  Process vmm({FerryBin(), "run", GuestPath("dirtier"), "--mem", "64M", "--vcpus", "2", "--api", sock, "--",
               "rate_mbps=50"},
              dir.File("vmm"));
  ASSERT_TRUE(WaitForReport(sock, "pages", 30000).ok()) << vmm.Stderr();
  auto pause = Api(sock, {{"op", "pause"}});
  ASSERT_TRUE(pause.ok()) << pause.status().message();
  auto paused1 = Api(sock, {{"op", "status"}});
  ASSERT_TRUE(paused1.ok());
  EXPECT_EQ((*paused1)["state"], "paused");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto paused2 = Api(sock, {{"op", "status"}});
  EXPECT_EQ((*paused1)["report"]["seq"], (*paused2)["report"]["seq"]) << "a paused guest must not report";
  ASSERT_TRUE(Api(sock, {{"op", "resume"}}).ok());
  uint64_t seq = (*paused2)["report"]["seq"];
  EXPECT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && (*r)["report"]["seq"].get<uint64_t>() > seq;
  }, 5000)) << "the guest did not run again after resume";
  // The guest saw the pause as a gap in its own loop.
  auto after = WaitForReport(sock, "max_pause_us", 5000);
  ASSERT_TRUE(after.ok());
  EXPECT_GE(std::stoull((*after)["max_pause_us"].get<std::string>()), 1000000u);
  vmm.Signal(SIGTERM);
  EXPECT_EQ(vmm.Wait(10000), 0) << vmm.Stderr();
}

TEST(VmE2eTest, GuestCrashAndPanicAreReported) {
  REQUIRE_KVM();
  TempDir dir;
  auto crash = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--", "mode=crash"}, dir.File("crash"));
  EXPECT_EQ(crash.code, 3);
  EXPECT_NE(crash.err.find("triple fault"), std::string::npos) << crash.err;
  auto panic = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--", "mode=panic"}, dir.File("panic"));
  EXPECT_EQ(panic.code, 3);
  EXPECT_NE(panic.err.find("asked to panic"), std::string::npos) << panic.err;
  auto code = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--vcpus", "3", "--", "code=7"}, dir.File("code"));
  EXPECT_EQ(code.code, 7);
  EXPECT_NE(code.out.find("hello from a Ferry guest: 3 vCPUs"), std::string::npos) << code.out;
}

TEST(VmE2eTest, CliRefusesBadInputClearly) {
  REQUIRE_KVM();
  TempDir dir;
  std::string not_elf = dir.File("not.elf");
  FILE* f = std::fopen(not_elf.c_str(), "w");
  std::fputs("this is not an ELF file, it is text\n", f);
  std::fclose(f);
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  } cases[] = {
      {{"run", not_elf}, 1, "not an ELF file"},
      {{"run", GuestPath("hello"), "--mem", "12Q"}, 1, "unknown suffix"},
      {{"run", GuestPath("hello"), "--mem", "3M"}, 1, "multiple of 2M"},
      {{"run", GuestPath("hello"), "--mem", "4M"}, 1, "--mem must be at least"},
      {{"run", GuestPath("hello"), "--vcpus", "0"}, 2, "vcpus"},
      {{"run", "/nonexistent.elf"}, 2, "nonexistent"},
      {{"run", GuestPath("hello"), "--", "novalue"}, 1, "key=value"},
      {{"status", "--api", dir.File("none.sock")}, 1, "no VMM is listening"},
      {{"frobnicate"}, 2, "subcommand"},
  };
  int i = 0;
  for (const auto& c : cases) {
    auto r = RunFerry(c.args, dir.File("case" + std::to_string(i++)));
    EXPECT_EQ(r.code, c.code) << c.args[0] << " " << (c.args.size() > 1 ? c.args[1] : "") << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << "stderr: " << r.err;
  }
}

TEST(VmE2eTest, ApiSocketInUseIsRefused) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("api.sock");
  Process first({FerryBin(), "run", GuestPath("hello"), "--mem", "16M", "--api", sock, "--", "mode=spin"}, dir.File("a"));
  ASSERT_TRUE(WaitForReport(sock, "guest", 20000).ok()) << first.Stderr();
  auto second = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--api", sock}, dir.File("b"));
  EXPECT_EQ(second.code, 1);
  EXPECT_NE(second.err.find("in use by another running VMM"), std::string::npos) << second.err;
  // The first VMM is unharmed and stops cleanly on request.
  ASSERT_TRUE(Api(sock, {{"op", "stop"}}).ok());
  EXPECT_EQ(first.Wait(10000), 0) << first.Stderr();
  EXPECT_NE(first.Stdout().find("stop requested"), std::string::npos);
}

TEST(VmE2eTest, DirtyRateAndThrottleFromTheCli) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("api.sock");
  Process vmm({FerryBin(), "run", GuestPath("dirtier"), "--mem", "128M", "--vcpus", "2", "--dirty-ring", "4096", "--api",
               sock, "--", "rate_mbps=40", "wss_mib=64"},
              dir.File("vmm"));
  ASSERT_TRUE(WaitForReport(sock, "pages", 20000).ok()) << vmm.Stderr();
  auto rate = RunFerry({"dirty-rate", "--api", sock, "--seconds", "1", "--json"}, dir.File("rate"));
  ASSERT_EQ(rate.code, 0) << rate.err;
  auto j = nlohmann::json::parse(rate.out);
  EXPECT_EQ(j["source"], "ring");
  EXPECT_GT(j["mb_per_s"].get<double>(), 5.0);
  EXPECT_EQ(j["per_vcpu_pages_per_s"].size(), 2u);
  auto human = RunFerry({"dirty-rate", "--api", sock, "--seconds", "0.5"}, dir.File("human"));
  EXPECT_EQ(human.code, 0);
  EXPECT_NE(human.out.find("vCPU 1:"), std::string::npos) << human.out;
  auto throttle = RunFerry({"throttle", "--api", sock, "--percent", "50", "--vcpu", "1", "--json"}, dir.File("t"));
  ASSERT_EQ(throttle.code, 0) << throttle.err;
  EXPECT_EQ(nlohmann::json::parse(throttle.out)["throttle_percent"], nlohmann::json::parse("[0,50]"));
  auto bad = RunFerry({"throttle", "--api", sock, "--percent", "100"}, dir.File("bad"));
  EXPECT_EQ(bad.code, 2);
  auto no_vcpu = RunFerry({"throttle", "--api", sock, "--percent", "10", "--vcpu", "5"}, dir.File("novcpu"));
  // The typed API checks the index against the VM's vCPU count before anything runs: a request
  // error (exit 2) that names the field and its range.
  EXPECT_EQ(no_vcpu.code, 2);
  EXPECT_NE(no_vcpu.err.find("\"vcpu\" must be a whole number in -1..1"), std::string::npos) << no_vcpu.err;
  auto bad_ring = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--dirty-ring", "1000"}, dir.File("badring"));
  EXPECT_EQ(bad_ring.code, 1);
  EXPECT_NE(bad_ring.err.find("power of two"), std::string::npos) << bad_ring.err;
  ASSERT_TRUE(Api(sock, {{"op", "stop"}}).ok());
  EXPECT_EQ(vmm.Wait(10000), 0) << vmm.Stderr();
}

TEST(VmE2eTest, StaleSocketFromADeadVmmIsReplaced) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("api.sock");
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);  // bound, never listened: what a killed VMM leaves behind
  auto r = RunFerry({"run", GuestPath("hello"), "--mem", "16M", "--api", sock}, dir.File("run"));
  EXPECT_EQ(r.code, 0) << r.err;
}

}  // namespace
}  // namespace ferry::e2e
