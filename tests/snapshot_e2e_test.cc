// Snapshot and restore on real KVM: a memcheck guest snapshotted while it writes and restored
// in a new process passes full verification; a flipped byte or a stale page in the restored
// memory is caught by memcheck; truncated, corrupt and wrong-version files are refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <mutex>

#include "e2e_util.h"
#include "ferry/base/checksum.h"
#include "ferry/hypervisor/snapshot.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::e2e {
namespace {

using hypervisor::Vm;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

// Runs memcheck, lets it write, snapshots it (stopping it), returns the file path.
std::string SnapshotRunningMemcheck(const TempDir& dir, const std::string& name, int vcpus) {
  std::string sock = dir.File(name + ".sock");
  std::string file = dir.File(name + ".snap");
  Process vmm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "64M", "--vcpus", std::to_string(vcpus), "--api", sock},
              dir.File(name + "-vmm"));
  EXPECT_TRUE(WaitForReport(sock, "verify_seq", 30000).ok()) << vmm.Stderr();
  EXPECT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && std::stoull((*r)["report"]["fields"].value("writes", std::string("0"))) > 10000;
  }, 30000));
  auto snap = Api(sock, {{"op", "snapshot"}, {"file", file}, {"stop", true}, {"fsync", false}}, 60000);
  EXPECT_TRUE(snap.ok()) << snap.status().message() << vmm.Stderr();
  EXPECT_EQ(vmm.Wait(20000), 0) << vmm.Stderr();
  return file;
}

// Runs the hello guest idling, snapshots it and stops it. Returns the file and the guest's
// time just before the snapshot.
struct HelloSnapshot {
  std::string file;
  uint64_t guest_time_ns = 0;
};
HelloSnapshot SnapshotIdleHello(const TempDir& dir, const std::string& name) {
  HelloSnapshot out{dir.File(name + ".snap")};
  std::string sock = dir.File(name + ".sock");
  Process vmm({FerryBin(), "run", GuestPath("hello"), "--mem", "16M", "--api", sock, "--", "mode=spin"},
              dir.File(name + "-vmm"));
  EXPECT_TRUE(WaitForReport(sock, "guest", 20000).ok()) << vmm.Stderr();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto status = Api(sock, {{"op", "status"}});
  EXPECT_TRUE(status.ok());
  if (status.ok()) out.guest_time_ns = (*status)["guest_time_ns"];
  EXPECT_TRUE(Api(sock, {{"op", "snapshot"}, {"file", out.file}, {"stop", true}, {"fsync", false}}).ok());
  EXPECT_EQ(vmm.Wait(10000), 0) << vmm.Stderr();
  return out;
}

// An in-process VM restored from (possibly modified) snapshot contents, verified once.
struct Verdict {
  bool reported = false;
  std::map<std::string, std::string> fields;
  std::string console;
};

Verdict RestoreAndVerify(hypervisor::LoadedSnapshot loaded) {
  Verdict v;
  std::mutex mu;
  auto vm = Vm::FromState(loaded.state, std::move(loaded.memory), [&](std::string_view line) {
    std::lock_guard lock(mu);
    v.console += std::string(line) + "\n";
  });
  EXPECT_TRUE(vm.ok()) << vm.status().message();
  if (!vm.ok()) return v;
  uint64_t target = (*vm)->RequestVerify();
  EXPECT_TRUE((*vm)->Start().ok());
  v.reported = WaitUntil([&] {
    auto r = (*vm)->LastReport();
    auto it = r.fields.find("verify_seq");
    return it != r.fields.end() && std::stoull(it->second) >= target;
  }, 30000);
  v.fields = (*vm)->LastReport().fields;
  (*vm)->Stop();
  (*vm)->WaitForExit();
  std::lock_guard lock(mu);
  return v;
}

TEST(SnapshotE2eTest, RestoredInANewProcessPassesFullVerification) {
  REQUIRE_KVM();
  TempDir dir;
  std::string file = SnapshotRunningMemcheck(dir, "a", 2);
  std::string sock = dir.File("restored.sock");
  Process restored({FerryBin(), "restore", "--file", file, "--api", sock}, dir.File("restored"));
  auto verify = Api(sock, {{"op", "verify"}}, 40000);
  if (!verify.ok()) {  // the API may not be up yet
    ASSERT_TRUE(WaitForReport(sock, "verify_seq", 30000).ok()) << restored.Stderr();
    verify = Api(sock, {{"op", "verify"}}, 40000);
  }
  ASSERT_TRUE(verify.ok()) << verify.status().message() << restored.Stderr();
  EXPECT_TRUE((*verify)["passed"].get<bool>()) << verify->dump();
  // The restored guest keeps writing and verifying.
  uint64_t writes = std::stoull((*verify)["report"]["fields"]["writes"].get<std::string>());
  EXPECT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && std::stoull((*r)["report"]["fields"]["writes"].get<std::string>()) > writes + 1000;
  }, 10000));
  ASSERT_TRUE(Api(sock, {{"op", "stop"}}).ok());
  EXPECT_EQ(restored.Wait(20000), 0) << restored.Stderr();
  EXPECT_EQ(restored.Stdout().find("ERROR"), std::string::npos) << restored.Stdout();
}

TEST(SnapshotE2eTest, GuestTimeNeverGoesBackwardAcrossRestore) {
  REQUIRE_KVM();
  TempDir dir;
  HelloSnapshot snap = SnapshotIdleHello(dir, "a");
  const std::string& file = snap.file;
  std::string sock2 = dir.File("b.sock");
  Process restored({FerryBin(), "restore", "--file", file, "--api", sock2}, dir.File("b"));
  ASSERT_TRUE(WaitForReport(sock2, "guest", 20000).ok()) << restored.Stderr();
  auto after = Api(sock2, {{"op", "status"}});
  ASSERT_TRUE(after.ok());
  uint64_t t0 = snap.guest_time_ns, t1 = (*after)["guest_time_ns"];
  EXPECT_GT(t1, t0) << "guest time went backward across restore";
  EXPECT_LT(t1 - t0, 30'000'000'000ull) << "guest time jumped far beyond the real elapsed time";
  ASSERT_TRUE(Api(sock2, {{"op", "stop"}}).ok());
  EXPECT_EQ(restored.Wait(10000), 0);
}

TEST(SnapshotE2eTest, MemcheckCatchesAFlippedByte) {
  REQUIRE_KVM();
  TempDir dir;
  std::string file = SnapshotRunningMemcheck(dir, "a", 2);
  auto loaded = hypervisor::ReadSnapshot(file);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  // Control: the unmodified state verifies clean in-process too.
  {
    auto again = hypervisor::ReadSnapshot(file);
    ASSERT_TRUE(again.ok());
    Verdict clean = RestoreAndVerify(std::move(again).value());
    ASSERT_TRUE(clean.reported) << clean.console;
    EXPECT_EQ(clean.fields["verify_errors"], "0") << clean.console;
  }
  // Find memcheck's data area from the guest's own report in the snapshot's memory: its
  // record array starts at free_start; data pages follow (see memcheck.c).
  auto probe = hypervisor::ReadSnapshot(file);
  ASSERT_TRUE(probe.ok());
  Verdict info = RestoreAndVerify(std::move(probe).value());
  uint64_t data_gpa = std::stoull(info.fields["data_gpa"]);
  ASSERT_GT(data_gpa, 0u);
  uint64_t target = data_gpa + 1234 * 4096 + 2000;
  loaded->memory.host()[target] ^= 0x10;
  Verdict v = RestoreAndVerify(std::move(loaded).value());
  ASSERT_TRUE(v.reported) << v.console;
  EXPECT_EQ(v.fields["verdict"], "fail") << v.console;
  EXPECT_GE(std::stoull(v.fields["verify_errors"]), 1u) << v.console;
  EXPECT_NE(v.console.find("page 1234"), std::string::npos) << v.console;
  EXPECT_NE(v.console.find("checksum"), std::string::npos) << v.console;
}

TEST(SnapshotE2eTest, MemcheckCatchesAStalePage) {
  REQUIRE_KVM();
  TempDir dir;
  // Two snapshots of one run: the older one's copy of a page is a "lost update" when spliced
  // into the newer state.
  std::string sock = dir.File("a.sock");
  Process vmm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "32M", "--api", sock, "--", "batch=256"}, dir.File("a"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 30000).ok());
  ASSERT_TRUE(Api(sock, {{"op", "snapshot"}, {"file", dir.File("old.snap")}, {"fsync", false}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // every page is rewritten meanwhile
  ASSERT_TRUE(Api(sock, {{"op", "snapshot"}, {"file", dir.File("new.snap")}, {"stop", true}, {"fsync", false}}).ok());
  EXPECT_EQ(vmm.Wait(10000), 0);
  auto old_snap = hypervisor::ReadSnapshot(dir.File("old.snap"));
  auto new_snap = hypervisor::ReadSnapshot(dir.File("new.snap"));
  ASSERT_TRUE(old_snap.ok() && new_snap.ok());
  auto probe = hypervisor::ReadSnapshot(dir.File("new.snap"));
  Verdict info = RestoreAndVerify(std::move(probe).value());
  uint64_t data_gpa = std::stoull(info.fields["data_gpa"]);
  uint64_t pages = std::stoull(info.fields["pages"]);
  // Pick a page whose content differs between the two snapshots (it was rewritten).
  uint64_t stale = pages;
  for (uint64_t p = 0; p < pages; ++p) {
    uint64_t off = data_gpa + p * 4096;
    if (std::memcmp(old_snap->memory.host() + off, new_snap->memory.host() + off, 4096) != 0) {
      stale = p;
      break;
    }
  }
  ASSERT_LT(stale, pages) << "no page was rewritten between the snapshots";
  std::memcpy(new_snap->memory.host() + data_gpa + stale * 4096, old_snap->memory.host() + data_gpa + stale * 4096, 4096);
  Verdict v = RestoreAndVerify(std::move(new_snap).value());
  ASSERT_TRUE(v.reported) << v.console;
  EXPECT_EQ(v.fields["verdict"], "fail") << v.console;
  EXPECT_NE(v.console.find("stale page"), std::string::npos) << v.console;
}

TEST(SnapshotE2eTest, DamagedSnapshotsAreRefusedAndNothingRuns) {
  REQUIRE_KVM();
  TempDir dir;
  std::string good = SnapshotIdleHello(dir, "good").file;
  std::ifstream in(good, std::ios::binary);
  std::vector<char> bytes(std::istreambuf_iterator<char>(in), {});
  ASSERT_GT(bytes.size(), 4096u);
  auto write = [&](const std::string& name, const std::vector<char>& b) {
    std::ofstream out(dir.File(name), std::ios::binary);
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
    return dir.File(name);
  };
  std::vector<char> truncated(bytes.begin(), bytes.begin() + bytes.size() / 2);
  std::vector<char> flipped = bytes;
  flipped[bytes.size() - 5000] ^= 0x01;  // inside RAM
  std::vector<char> wrong_version = bytes;
  wrong_version[8] = 9;
  uint64_t sum = Checksum64(wrong_version.data(), 24);
  for (int i = 0; i < 8; ++i) wrong_version[24 + i] = static_cast<char>(sum >> (8 * i));
  struct Case {
    std::string file, message;
  } cases[] = {
      {write("truncated.snap", truncated), "truncated"},
      {write("flipped.snap", flipped), "checksum mismatch"},
      {write("version.snap", wrong_version), "version 9 is not supported"},
      {write("empty.snap", {}), "too short"},
      {dir.File("missing.snap"), "No such file"},
  };
  for (const auto& c : cases) {
    auto r = RunFerry({"restore", "--file", c.file, "--api", dir.File("r.sock")}, dir.File("r"), 20000);
    EXPECT_EQ(r.code, 1) << c.file << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.file << ": " << r.err;
    EXPECT_EQ(r.out, "") << "nothing may run from a damaged snapshot";
    EXPECT_NE(::access(dir.File("r.sock").c_str(), F_OK), 0) << "no API may come up";
  }
  // And the intact file still restores.
  std::string sock2 = dir.File("b.sock");
  Process restored({FerryBin(), "restore", "--file", good, "--api", sock2}, dir.File("b"));
  ASSERT_TRUE(WaitForReport(sock2, "guest", 20000).ok()) << restored.Stderr();
  ASSERT_TRUE(Api(sock2, {{"op", "stop"}}).ok());
  EXPECT_EQ(restored.Wait(10000), 0);
}

}  // namespace
}  // namespace ferry::e2e
