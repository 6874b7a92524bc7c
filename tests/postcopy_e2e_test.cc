// Post-copy on real KVM (issue 20): memcheck migrated in post-copy mode verifies every page on
// the destination; auto mode switches a dirtier faster than the link to post-copy instead of
// throttling it; a destination killed with -9, and a link cut for longer than the timeout, in
// the middle of post-copy leave the VM running on exactly one host (the source) and verifying
// there; kvstore under `ferry kv-load` through a killed destination loses no acknowledged PUT
// and shows no reply that the surviving copy does not reflect.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "e2e_util.h"
#include "migrate_util.h"
#include "test_hosts.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

std::unique_ptr<Process> StartMigration(const TempDir& dir, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {FerryBin(), "migrate", "--api", dir.File("src.sock")});
  return std::make_unique<Process>(argv, dir.File("mig"));
}

TEST(PostcopyE2E, MemcheckMovesAtOnceAndVerifiesEveryPageOnTheDestination) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  auto r = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--mode", "postcopy", "--verify", "--json"},
                    dir.File("mig"));
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  json s = LastJsonLine(r.out);
  EXPECT_EQ(s["mode"], "postcopy");
  EXPECT_EQ(s["rounds"].get<int>(), 0) << "post-copy at once: no pre-copy round";
  EXPECT_EQ(s["throttle_max"].get<int>(), 0);
  const json& p = s["postcopy"];
  EXPECT_TRUE(p["used"].get<bool>()) << s;
  EXPECT_GT(p["outstanding_pages"].get<uint64_t>(), 10000u) << "memcheck's pages followed the VM";
  EXPECT_GE(p["requested_pages"].get<uint64_t>() + p["placed_pages"].get<uint64_t>(), p["outstanding_pages"].get<uint64_t>());
  EXPECT_TRUE(s["verify_passed"].get<bool>()) << s["verify_report"];
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  EXPECT_NE(dst.process->Stderr().find("post-copy:"), std::string::npos) << dst.process->Stderr();
  ExpectRunning(dir.File("dst.sock"));
  ExpectVerifies(dir.File("dst.sock"));
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst.process->Wait(20000), 0) << dst.process->Stderr();
}

TEST(PostcopyE2E, AutoModeSwitchesADirtierFasterThanTheLinkInsteadOfThrottlingIt) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2);
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string key = WriteKey(dir, "key", "a-post-copy-key-of-enough-length");
  auto src = StartGuest(dir, "src", "dirtier", "128M", {"rate_mbps=150", "wss_mib=64"}, hosts->get(), 0);
  ASSERT_TRUE(WaitForReport(dir.File("src.sock"), "achieved_mbps", 20000).ok());
  auto dst = StartIncoming(dir, "dst", (*hosts)->address(1) + ":4413", {"--key", key}, hosts->get(), 1);
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key", key,
                                     "--mode", "auto", "--bandwidth", "60M", "--compress", "none", "--json"}),
                      dir.File("mig"), 90000);
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  json s = LastJsonLine(r.out);
  EXPECT_TRUE(s["postcopy"]["used"].get<bool>()) << s;
  EXPECT_NE(s["postcopy"]["reason"].get<std::string>().find("post-copy"), std::string::npos) << s["postcopy"];
  EXPECT_EQ(s["throttle_max"].get<int>(), 0) << "auto mode never slows the guest";
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  ExpectRunning(dir.File("dst.sock"));
  ASSERT_TRUE(WaitForReport(dir.File("dst.sock"), "achieved_mbps", 20000).ok()) << "the dirtier runs on there";
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
}

TEST(PostcopyE2E, ADestinationKilledMidwayLeavesTheSourceRunningAndVerifying) {
  REQUIRE_KVM();
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "512M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0");
  // ~100 MB at 20 MB/s: the background stream runs for seconds after the switchover.
  auto mig = StartMigration(dir, {"--to", dst.address, "--mode", "postcopy", "--bandwidth", "20M", "--compress", "none", "--json"});
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(mig->Wait(0), -1) << "post-copy ended before the kill: " << mig->Stdout();
  dst.process->Signal(SIGKILL);
  EXPECT_EQ(dst.process->Wait(5000), 128 + SIGKILL);
  EXPECT_EQ(mig->Wait(30000), 1) << mig->Stderr();
  EXPECT_NE(mig->Stderr().find("resumes here"), std::string::npos) << mig->Stderr();
  EXPECT_EQ(src->Wait(0), -1) << "the source VMM runs on";
  ExpectRunning(dir.File("src.sock"));
  ExpectVerifies(dir.File("src.sock"));
}

TEST(PostcopyE2E, ALinkCutLongerThanTheTimeoutLeavesExactlyOneCopyRunning) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2);
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string key = WriteKey(dir, "key", "a-post-copy-key-of-enough-length");
  // memcheck sweeps all of its pages, so they come on demand (outside --bandwidth) at ~20k/s:
  // 512 MiB keeps post-copy in flight for seconds after the cut at 1.5 s.
  auto src = StartGuest(dir, "src", "memcheck", "512M", {}, hosts->get(), 0);
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", (*hosts)->address(1) + ":4414", {"--key", key, "--io-timeout-ms", "3000"}, hosts->get(), 1);
  auto mig = std::make_unique<Process>(
      (*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key", key, "--mode",
                       "postcopy", "--bandwidth", "20M", "--compress", "none", "--io-timeout-ms", "3000", "--json"}),
      dir.File("mig"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(mig->Wait(0), -1) << "post-copy ended before the cut: " << mig->Stdout();
  ASSERT_TRUE((*hosts)->SetLink(1, false).ok());
  EXPECT_EQ(mig->Wait(30000), 1) << mig->Stderr();
  EXPECT_NE(mig->Stderr().find("resumes here"), std::string::npos) << mig->Stderr();
  // The destination gives up on its own, releasing nothing: one copy, the source's.
  EXPECT_EQ(dst.process->Wait(30000), 1) << dst.process->Stderr();
  EXPECT_NE(dst.process->Stderr().find("nothing left this host"), std::string::npos) << dst.process->Stderr();
  ASSERT_TRUE((*hosts)->SetLink(1, true).ok());
  ExpectRunning(dir.File("src.sock"));
  ExpectVerifies(dir.File("src.sock"));
}

TEST(PostcopyE2E, KvstoreThroughAKilledDestinationLosesNoAcknowledgedPut) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2, {.guest_network = true});
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  constexpr int kKeys = 128;
  const std::string disk = dir.File("shared.img");  // migration: one image both hosts reach
  std::ofstream(disk).close();
  ASSERT_EQ(::truncate(disk.c_str(), 4 << 20), 0);
  const std::string net = std::string("ftap0,bridge=") + TestHosts::kGuestBridge;
  std::string key = WriteKey(dir, "key", "a-post-copy-key-of-enough-length");
  auto src = std::make_unique<Process>(
      (*hosts)->In(0, {FerryBin(), "run", GuestPath("kvstore"), "--mem", "64M", "--disk", disk, "--net", net, "--api",
                       dir.File("src.sock"), "--", "ip=" + TestHosts::guest_address(0), "keys=" + std::to_string(kKeys),
                       "ballast_mib=24"}),
      dir.File("src"));
  auto client = std::make_unique<Process>(
      (*hosts)->InClient({FerryBin(), "kv-load", "--server", TestHosts::guest_address(0) + ":7000", "--rate", "400", "--keys",
                          std::to_string(kKeys), "--duration-s", "10", "--timeout-ms", "5000", "--json"}),
      dir.File("client"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto r = Api(dir.File("src.sock"), {{"op", "status"}});
        if (!r.ok()) return false;
        auto f = (*r)["report"]["fields"];
        return f.contains("puts") && std::stoull(f["puts"].get<std::string>()) > 50;
      },
      30000))
      << src->Stdout() << client->Stderr();
  auto dst = StartIncoming(dir, "dst", (*hosts)->address(1) + ":4415", {"--key", key, "--net", net}, hosts->get(), 1);
  auto mig = std::make_unique<Process>(
      (*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key", key, "--mode",
                       "postcopy", "--bandwidth", "2M", "--compress", "none", "--json"}),
      dir.File("mig"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_EQ(mig->Wait(0), -1) << "post-copy ended before the kill: " << mig->Stdout();
  dst.process->Signal(SIGKILL);
  EXPECT_EQ(mig->Wait(30000), 1) << mig->Stderr();
  ExpectRunning(dir.File("src.sock"));
  ASSERT_EQ(client->Wait(60000), 0) << client->Stdout() << client->Stderr();
  json r = LastJsonLine(client->Stdout());
  ASSERT_TRUE(r.is_object()) << client->Stdout();
  EXPECT_GT(r["acked_puts"].get<uint64_t>(), 300u);
  EXPECT_EQ(r["lost_puts"].get<uint64_t>(), 0u) << r;
  EXPECT_EQ(r["unreflected_replies"].get<uint64_t>(), 0u) << r;
  EXPECT_EQ(r["verified_keys"].get<uint64_t>(), static_cast<uint64_t>(kKeys)) << r;
  // The guest re-reads its disk against its table: the destination wrote nothing to it.
  auto verify = RunFerry({"verify", "--api", dir.File("src.sock")}, dir.File("verify"));
  EXPECT_EQ(verify.code, 0) << verify.out << verify.err;
  EXPECT_TRUE(Api(dir.File("src.sock"), {{"op", "stop"}, {"force", true}}).ok());
}

}  // namespace
}  // namespace ferry::e2e
