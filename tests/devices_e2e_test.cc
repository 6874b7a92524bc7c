// The PV devices on real KVM, TAPs and namespaces: a hostile guest's malformed rings are
// refused while the VMM keeps serving; kvstore serves the load client from its PV disk and
// NIC, survives a snapshot and restore, and a live migration between two namespace hosts,
// with every acknowledged PUT present afterwards (checked by the client itself).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "e2e_util.h"
#include "test_hosts.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

constexpr const char* kTap = "ftap0";
constexpr int kKeys = 128;

std::string MakeDisk(const TempDir& dir, const std::string& name, uint64_t bytes) {
  std::string path = dir.File(name);
  std::ofstream(path).close();
  EXPECT_EQ(::truncate(path.c_str(), static_cast<off_t>(bytes)), 0);
  return path;
}

std::string NetFlag() { return std::string(kTap) + ",bridge=" + TestHosts::kGuestBridge; }

// kvstore on host `host` with the disk and a NIC on the host's guest bridge.
std::unique_ptr<Process> StartKvstore(const TestHosts& hosts, int host, const TempDir& dir, const std::string& name,
                                      const std::string& disk) {
  return std::make_unique<Process>(
      hosts.In(host, {FerryBin(), "run", GuestPath("kvstore"), "--mem", "64M", "--disk", disk, "--net", NetFlag(),
                      "--api", dir.File(name + ".sock"), "--", "ip=" + TestHosts::guest_address(0),
                      "keys=" + std::to_string(kKeys)}),
      dir.File(name));
}

// The load client in the client namespace, for `seconds`, verifying at the end.
std::unique_ptr<Process> StartClient(const TestHosts& hosts, const TempDir& dir, const std::string& name, int seconds) {
  return std::make_unique<Process>(
      hosts.InClient({FerryBin(), "kv-load", "--server", TestHosts::guest_address(0) + ":7000", "--rate", "400",
                      "--keys", std::to_string(kKeys), "--duration-s", std::to_string(seconds), "--json"}),
      dir.File(name));
}

bool Serving(const std::string& sock) {
  auto r = Api(sock, {{"op", "status"}});
  if (!r.ok()) return false;
  auto f = (*r)["report"]["fields"];
  return f.contains("puts") && std::stoull(f["puts"].get<std::string>()) > 50;
}

void ExpectNoLostPuts(Process& client) {
  ASSERT_EQ(client.Wait(60000), 0) << client.Stdout() << client.Stderr();
  json r = LastJsonLine(client.Stdout());
  ASSERT_TRUE(r.is_object()) << client.Stdout();
  EXPECT_GT(r["acked_puts"].get<uint64_t>(), 100u);
  EXPECT_EQ(r["lost_puts"].get<uint64_t>(), 0u);
  EXPECT_EQ(r["stale_reads"].get<uint64_t>(), 0u);
  EXPECT_GT(r["verified_keys"].get<uint64_t>(), 0u);
}

TEST(DevicesE2E, MalformedRingsAreRefusedAndTheVmmKeepsServing) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(1, {.guest_network = true});
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string disk = MakeDisk(dir, "fuzz.img", 1 << 20);
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "run", GuestPath("ringfuzz"), "--mem", "32M", "--disk", disk,
                                       "--net", NetFlag(), "--", "rounds=4000", "seed=" + std::to_string(getpid())}),
                      dir.File("fuzz"), 120000);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ringfuzz: ok"), std::string::npos) << r.out << r.err;
}

TEST(DevicesE2E, KvstoreSurvivesSnapshotAndRestoreWithEveryAckedPut) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(1, {.guest_network = true});
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string disk = MakeDisk(dir, "kv.img", 4 << 20);
  auto vm = StartKvstore(**hosts, 0, dir, "kv", disk);
  auto client = StartClient(**hosts, dir, "client", 8);
  ASSERT_TRUE(WaitUntil([&] { return Serving(dir.File("kv.sock")); }, 30000)) << vm->Stdout() << client->Stderr();
  // The snapshot stops the VM; a new VMM restores it on the same host, disk and TAP name,
  // while the client keeps sending.
  auto snap = RunFerry({"snapshot", "--api", dir.File("kv.sock"), "--file", dir.File("kv.snap"), "--stop"}, dir.File("snap"));
  ASSERT_EQ(snap.code, 0) << snap.err;
  ASSERT_EQ(vm->Wait(20000), 0) << vm->Stderr();
  // A disk of another size, or none, is refused before anything runs.
  std::string small = MakeDisk(dir, "small.img", 1 << 20);
  auto wrong = RunCommand((*hosts)->In(0, {FerryBin(), "restore", "--file", dir.File("kv.snap"), "--disk", small}),
                          dir.File("wrong"), 30000);
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("sectors"), std::string::npos) << wrong.err;
  // The snapshot names its disk; restore opens it read-write only when told to.
  auto untold = RunCommand((*hosts)->In(0, {FerryBin(), "restore", "--file", dir.File("kv.snap")}), dir.File("untold"), 30000);
  EXPECT_EQ(untold.code, 1);
  EXPECT_NE(untold.err.find("--disk " + disk), std::string::npos) << untold.err;
  auto restored = std::make_unique<Process>(
      (*hosts)->In(0, {FerryBin(), "restore", "--file", dir.File("kv.snap"), "--disk", disk, "--api", dir.File("kv2.sock")}),
      dir.File("kv2"));
  ASSERT_TRUE(WaitUntil([&] { return Serving(dir.File("kv2.sock")); }, 30000)) << restored->Stderr();
  ExpectNoLostPuts(*client);
  // The restore asked kvstore to check its table against the disk.
  auto v = Api(dir.File("kv2.sock"), {{"op", "verify"}, {"timeout_ms", 20000}}, 30000);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_TRUE((*v)["passed"].get<bool>()) << (*v)["report"]["text"];
  auto status = Api(dir.File("kv2.sock"), {{"op", "status"}});
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)["devices"]["nic"]["guest_ip"], TestHosts::guest_address(0));
  EXPECT_GE((*status)["devices"]["nic"]["announcements"].get<int>(), 1);
  EXPECT_TRUE(Api(dir.File("kv2.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(restored->Wait(20000), 0) << restored->Stderr();
}

TEST(DevicesE2E, KvstoreMigratesBetweenHostsWhileTheClientRuns) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2, {.guest_network = true});
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string disk = MakeDisk(dir, "kv.img", 4 << 20);  // shared storage: both hosts open this path
  auto vm = StartKvstore(**hosts, 0, dir, "src", disk);
  auto client = StartClient(**hosts, dir, "client", 8);
  ASSERT_TRUE(WaitUntil([&] { return Serving(dir.File("src.sock")); }, 30000)) << vm->Stdout() << client->Stderr();
  // The destination takes the disk path, TAP and bridge from the migrated config: the same
  // names exist on every test host. A keyless listener accepts its own host only: both ends
  // get a key.
  std::string key = WriteKey(dir, "key", "kvstore-migration-test-key");
  auto dst = std::make_unique<Process>((*hosts)->In(1, {FerryBin(), "incoming", "--listen", (*hosts)->address(1) + ":4421",
                                                    "--key", key, "--api", dir.File("dst.sock")}),
                                  dir.File("dst"));
  ASSERT_TRUE(WaitUntil([&] { return dst->Stderr().find("listening on") != std::string::npos; }, 10000));
  auto m = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to",
                                       (*hosts)->address(1) + ":4421", "--key", key, "--verify", "--json"}),
                      dir.File("mig"), 60000);
  ASSERT_EQ(m.code, 0) << m.err << dst->Stderr();
  json s = LastJsonLine(m.out);
  EXPECT_TRUE(s["verify_passed"].get<bool>()) << s;
  EXPECT_EQ(vm->Wait(20000), 0) << vm->Stderr();
  ExpectNoLostPuts(*client);
  auto status = Api(dir.File("dst.sock"), {{"op", "status"}});
  ASSERT_TRUE(status.ok());
  EXPECT_GE((*status)["devices"]["nic"]["announcements"].get<int>(), 1) << "the new host announces the guest";
  EXPECT_GT((*status)["devices"]["nic"]["rx_frames"].get<int>(), 0) << "traffic followed the guest";
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst->Wait(20000), 0) << dst->Stderr();
}

TEST(DevicesE2E, DestinationWithTheWrongDiskIsRefusedAndTheSourceServesOn) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2, {.guest_network = true});
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  std::string disk = MakeDisk(dir, "kv.img", 4 << 20);
  std::string other = MakeDisk(dir, "other.img", 8 << 20);
  auto vm = StartKvstore(**hosts, 0, dir, "src", disk);
  std::string key = WriteKey(dir, "key", "kvstore-migration-test-key");
  auto dst = std::make_unique<Process>((*hosts)->In(1, {FerryBin(), "incoming", "--listen", (*hosts)->address(1) + ":4422",
                                                        "--key", key, "--disk", other}),
                                       dir.File("dst"));
  ASSERT_TRUE(WaitUntil([&] { return dst->Stderr().find("listening on") != std::string::npos; }, 10000));
  auto client = StartClient(**hosts, dir, "client", 4);
  ASSERT_TRUE(WaitUntil([&] { return Serving(dir.File("src.sock")); }, 30000)) << vm->Stdout() << client->Stderr();
  auto m = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to",
                                       (*hosts)->address(1) + ":4422", "--key", key}),
                      dir.File("mig"), 60000);
  EXPECT_EQ(m.code, 1) << m.out << m.err;
  EXPECT_NE(m.err.find("sectors"), std::string::npos) << m.err;
  EXPECT_EQ(dst->Wait(20000), 1) << dst->Stderr();
  // The source resumed: the client's run completes with every acknowledged PUT in place.
  ExpectNoLostPuts(*client);
  EXPECT_TRUE(Api(dir.File("src.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(vm->Wait(20000), 0) << vm->Stderr();
}

}  // namespace
}  // namespace ferry::e2e
