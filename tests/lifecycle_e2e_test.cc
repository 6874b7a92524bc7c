// The VM lifecycle and the typed API on real KVM: operators hammering a VM with pause,
// resume, stop and snapshot while it migrates never get two copies, a corrupt snapshot or a
// source that runs after commit; every op with malformed fields is refused and the VMM and
// its guest live on; a fence holds against resume; a snapshot may not overwrite the VM's own
// files; a destination that could not serve the VM does not accept it; a hostile guest's
// report fails its verification, never the VMM.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>

#include "e2e_util.h"
#include "ferry/base/unique_fd.h"
#include "ferry/vmhost/requests.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

std::string Phase(const std::string& sock) {
  auto r = Api(sock, {{"op", "status"}}, 5000);
  return r.ok() ? (*r).value("state", "") : "gone";
}

// The guest still runs and passes a full verification; then it is stopped and its VMM ends.
void ExpectVerifiesThenStop(const TempDir& dir, const std::string& sock, Process& vm) {
  EXPECT_EQ(Phase(sock), "running");
  auto verify = RunFerry({"verify", "--api", sock, "--timeout-ms", "60000"}, dir.File("verify"), 90000);
  EXPECT_EQ(verify.code, 0) << verify.out << verify.err;
  EXPECT_TRUE(Api(sock, {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(vm.Wait(20000), 0) << vm.Stderr();
}

// One raw line to the API and its reply line (for what a typed client cannot send).
std::string RawLine(const std::string& sock, const std::string& line) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, sock.c_str(), sock.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "";
  timeval tv{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
  std::string in;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, n);
  }
  return in;
}

// Operators hammer the source with pause, resume, snapshot (and, once the migration holds
// the VM, stop) while `ferry migrate --verify` runs, three migrations in a row. Afterwards:
// every migration verified, each source VMM ended on its own after commit and was refused
// everything from the moment the migration held it, and every snapshot that answered ok
// restores and verifies.
TEST(LifecycleE2E, HammeringAMigratingVmNeverMakesTwoCopiesOrACorruptSnapshot) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("vm0.sock");
  auto vm = std::make_unique<Process>(
      std::vector<std::string>{FerryBin(), "run", GuestPath("memcheck"), "--mem", "128M", "--vcpus", "2", "--api", sock},
      dir.File("vm0"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 20000).ok()) << vm->Stderr();
  std::vector<std::string> good_snapshots;
  int refused = 0, obeyed_while_held = 0;
  for (int round = 0; round < 3; ++round) {
    const std::string next = dir.File("vm" + std::to_string(round + 1) + ".sock");
    const std::string port = std::to_string(4460 + round);
    auto dst = std::make_unique<Process>(
        std::vector<std::string>{FerryBin(), "incoming", "--listen", "127.0.0.1:" + port, "--api", next},
        dir.File("in" + std::to_string(round)));
    ASSERT_TRUE(WaitUntil([&] { return dst->Stderr().find("listening on") != std::string::npos; }, 10000)) << dst->Stderr();

    std::atomic<bool> done{false};
    std::mutex mu;
    std::thread hammer([&] {
      for (int i = 0; !done; ++i) {
        const bool held = Phase(sock) == "migrating";
        json req;
        switch (i % 4) {
          case 0: req = {{"op", "pause"}}; break;
          case 1: req = {{"op", "resume"}}; break;
          case 2: {
            std::lock_guard lock(mu);
            // Three snapshots in all are enough to check, and bound the disk they take.
            if (good_snapshots.size() >= 3) {
              req = {{"op", "resume"}};
            } else {
              req = {{"op", "snapshot"},
                     {"file", dir.File("s" + std::to_string(round) + "-" + std::to_string(i) + ".snap")},
                     {"fsync", false}};
            }
            break;
          }
          default: req = held ? json{{"op", "stop"}} : json{{"op", "resume"}}; break;
        }
        auto r = Api(sock, req, 60000);
        std::lock_guard lock(mu);
        if (r.ok() && req["op"] == "snapshot") good_snapshots.push_back(req["file"]);
        if (!r.ok() && r.status().code() == ErrorCode::kRefused) ++refused;
        if (r.ok() && held && Phase(sock) == "migrating") ++obeyed_while_held;
        usleep(2000);
      }
    });
    // The hammer may have paused the VM, and a migration of a paused VM is refused (exit 5):
    // resume and try again until one runs.
    CommandResult mig;
    for (int attempt = 0; attempt < 50; ++attempt) {
      mig = RunFerry({"migrate", "--api", sock, "--to", "127.0.0.1:" + port, "--verify", "--json"},
                     dir.File("mig" + std::to_string(round)), 120000);
      if (mig.code != 5) break;
      (void)Api(sock, {{"op", "resume"}}, 5000);
    }
    done = true;
    hammer.join();
    ASSERT_EQ(mig.code, 0) << mig.out << mig.err << dst->Stderr();
    json stats = LastJsonLine(mig.out);
    EXPECT_TRUE(stats.value("verify_passed", false)) << stats.dump();
    // The source never runs again: it is refused everything and its VMM ends by itself.
    auto again = Api(sock, {{"op", "resume"}, {"force", true}}, 5000);
    EXPECT_FALSE(again.ok());
    EXPECT_EQ(vm->Wait(20000), 0) << vm->Stderr();
    ASSERT_TRUE(WaitUntil([&] { return Phase(next) == "running"; }, 10000)) << dst->Stderr();
    vm = std::move(dst);
    sock = next;
  }
  EXPECT_EQ(obeyed_while_held, 0) << "an operator request was obeyed while a migration held the VM";
  EXPECT_GT(refused, 0) << "the hammer never met a migration holding the VM";
  ExpectVerifiesThenStop(dir, sock, *vm);
  // Every snapshot that answered ok restores and verifies (the first few, to bound the time).
  std::printf("%zu snapshots answered ok, %d requests refused\n", good_snapshots.size(), refused);
  for (size_t i = 0; i < good_snapshots.size() && i < 3; ++i) {
    std::string rsock = dir.File("r" + std::to_string(i) + ".sock");
    Process restored({FerryBin(), "restore", "--file", good_snapshots[i], "--api", rsock}, dir.File("r" + std::to_string(i)));
    ASSERT_TRUE(WaitUntil([&] { return Api(rsock, {{"op", "status"}}, 2000).ok(); }, 20000)) << restored.Stderr();
    auto v = RunFerry({"verify", "--api", rsock, "--timeout-ms", "60000"}, dir.File("rv" + std::to_string(i)), 90000);
    EXPECT_EQ(v.code, 0) << good_snapshots[i] << ": " << v.out << v.err;
    EXPECT_TRUE(Api(rsock, {{"op", "stop"}, {"force", true}}).ok());
    EXPECT_EQ(restored.Wait(20000), 0);
  }
}

// Every op, every field, with values of the wrong type, missing, negative, NaN (sent as null,
// as JSON has no NaN) and huge; garbage lines; flags of nan and inf. Each is refused with a
// code and the VM runs on and verifies.
TEST(LifecycleE2E, MalformedRequestsAndFlagsAreRefusedAndTheGuestVerifies) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("vm.sock");
  Process vm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "64M", "--api", sock}, dir.File("vm"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 20000).ok()) << vm.Stderr();
  const json values[] = {"x", -1, nullptr, 1e300, std::numeric_limits<uint64_t>::max(), json::array(), json::object(),
                         0.5, -0.0 - 1e-9};
  int refused = 0;
  for (const auto& op : vmhost::ApiOps()) {
    for (const auto& field : vmhost::ApiFields(op)) {
      for (const auto& v : values) {
        if (field == "file" && v.is_string()) continue;  // a valid name: it would write a snapshot
        json req = {{"op", op}, {field, v}};
        auto r = Api(sock, req, 10000);
        ASSERT_TRUE(r.ok() || r.status().code() != ErrorCode::kIo) << req.dump() << ": " << r.status().message();
        if (!r.ok()) ++refused;
        ASSERT_TRUE(Api(sock, {{"op", "status"}}, 5000).ok()) << "the VMM died after " << req.dump() << vm.Stderr();
      }
    }
    auto missing = Api(sock, {{"op", op}, {"unknown_field", 1}}, 10000);
    EXPECT_FALSE(missing.ok()) << op;
    if (!missing.ok()) {
      EXPECT_EQ(missing.status().code(), ErrorCode::kInvalidArgument) << op;
    }
  }
  for (const std::string& line : {std::string("{\n"), std::string("[]\n"), std::string("{\"op\":\"verify\",\"timeout_ms\":NaN}\n"),
                                 std::string("{\"op\":\"status\",\"x\":\"\xff\xfe\"}\n"), std::string(2 << 20, 'a') + "\n"}) {
    std::string reply = RawLine(sock, line);
    if (!reply.empty()) {
      EXPECT_NE(reply.find("\"ok\":false"), std::string::npos) << reply;
    }
  }
  // The CLI refuses non-finite and oversized values before it sends them (exit 2).
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"dirty-rate", "--api", sock, "--seconds", "nan"},
           {"dirty-rate", "--api", sock, "--seconds", "inf"},
           {"migrate", "--api", sock, "--to", "127.0.0.1:1", "--downtime-ms", "nan"},
           {"migrate", "--api", sock, "--to", "127.0.0.1:1", "--xbzrle-cache", "1T"},
           {"throttle", "--api", sock, "--percent", "100"}}) {
    auto r = RunFerry(args, dir.File("cli"));
    EXPECT_EQ(r.code, 2) << args[0] << " " << args.back() << ": " << r.err;
  }
  std::printf("%d malformed requests refused\n", refused);
  EXPECT_GT(refused, 100);
  ExpectVerifiesThenStop(dir, sock, vm);
}

TEST(LifecycleE2E, AFenceHoldsAgainstResumeAndSnapshotsCannotOverwriteTheVmsOwnFiles) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("vm.sock"), disk = dir.File("disk.img");
  ASSERT_EQ(RunCommand({"truncate", "-s", "4M", disk}, dir.File("truncate")).code, 0);
  Process vm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "64M", "--disk", disk, "--api", sock}, dir.File("vm"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 20000).ok()) << vm.Stderr();
  ASSERT_TRUE(Api(sock, {{"op", "fence"}}).ok());
  EXPECT_EQ(Phase(sock), "fenced");
  auto resume = RunFerry({"resume", "--api", sock}, dir.File("resume"));
  EXPECT_EQ(resume.code, 5) << resume.err;
  EXPECT_NE(resume.err.find("fenced"), std::string::npos) << resume.err;
  EXPECT_EQ(RunFerry({"resume", "--api", sock, "--force"}, dir.File("force")).code, 5);
  auto st = Api(sock, {{"op", "status"}});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ((*st)["vm_state"], "paused");
  EXPECT_TRUE((*st)["ha"]["fenced"].get<bool>());
  ASSERT_TRUE(Api(sock, {{"op", "unfence"}}).ok());
  EXPECT_EQ(Phase(sock), "running");
  for (const std::string& own : {sock, disk, GuestPath("memcheck")}) {
    auto snap = RunFerry({"snapshot", "--api", sock, "--file", own}, dir.File("snap"));
    EXPECT_EQ(snap.code, 2) << own << ": " << snap.err;
  }
  ExpectVerifiesThenStop(dir, sock, vm);
}

// `ferry incoming --api` with a path it cannot bind ends before it listens, so the source's
// migration fails at connect and its VM runs on.
TEST(LifecycleE2E, ADestinationThatCannotServeTheVmDoesNotAcceptIt) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("vm.sock");
  Process vm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "64M", "--api", sock}, dir.File("vm"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 20000).ok()) << vm.Stderr();
  auto dst = RunFerry({"incoming", "--listen", "127.0.0.1:4470", "--api", dir.File("no/such/dir/x.sock")}, dir.File("dst"), 10000);
  EXPECT_EQ(dst.code, 1) << dst.err;
  EXPECT_EQ(dst.err.find("listening"), std::string::npos) << dst.err;
  auto mig = RunFerry({"migrate", "--api", sock, "--to", "127.0.0.1:4470"}, dir.File("mig"), 30000);
  EXPECT_EQ(mig.code, 1) << mig.err;
  ExpectVerifiesThenStop(dir, sock, vm);
}

// A guest that reports a verification with fields that are not numbers, and bytes that are
// not UTF-8, fails `ferry verify`; the VMM answers on.
TEST(LifecycleE2E, AHostileGuestsReportFailsItsVerificationNotTheVmm) {
  REQUIRE_KVM();
  TempDir dir;
  std::string sock = dir.File("vm.sock");
  Process vm({FerryBin(), "run", GuestPath("hello"), "--mem", "16M", "--api", sock, "--", "mode=hostile"}, dir.File("vm"));
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 20000).ok()) << vm.Stderr();
  for (int i = 0; i < 3; ++i) {
    auto verify = RunFerry({"verify", "--api", sock, "--timeout-ms", "5000"}, dir.File("verify"), 30000);
    EXPECT_EQ(verify.code, 1) << verify.out << verify.err;
    EXPECT_NE(verify.out.find("FAILED"), std::string::npos) << verify.out << verify.err;
    EXPECT_TRUE(Api(sock, {{"op", "status"}}).ok()) << vm.Stderr();
  }
  ASSERT_TRUE(Api(sock, {{"op", "stop"}}).ok());
  EXPECT_EQ(vm.Wait(10000), 0) << vm.Stderr();
}

}  // namespace
}  // namespace ferry::e2e

namespace ferry::e2e {
namespace {

// The HA watchdog lease: a VMM whose lease is not renewed fences its VM within the lease,
// refuses unfence until it is renewed, and the guest verifies after the agent's way back
// (renew, unfence).
TEST(LifecycleE2E, AVmWhoseLeaseRunsOutIsFencedUntilRenewedAndUnfenced) {
  REQUIRE_KVM();
  TempDir dir;
  const std::string sock = dir.File("vm.sock");
  Process vm({FerryBin(), "run", GuestPath("memcheck"), "--mem", "64M", "--api", sock, "--lease-ms", "400"}, dir.File("vm"));
  // The lease runs from the start, as an agent's would: renewed while memcheck fills its memory.
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)Api(sock, {{"op", "lease"}, {"ttl_ms", 400}});
        auto r = Api(sock, {{"op", "status"}});
        return r.ok() && (*r)["report"]["fields"].contains("verify_seq");
      },
      20000))
      << vm.Stderr();
  // Renewed: it runs on past several leases.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(Api(sock, {{"op", "lease"}, {"ttl_ms", 400}}).ok());
    usleep(100 * 1000);
  }
  EXPECT_EQ(Phase(sock), "running");
  // Not renewed: fenced within the lease (and a scheduling margin).
  std::string phase;
  for (int i = 0; i < 100 && (phase = Phase(sock)) != "fenced"; ++i) usleep(20 * 1000);
  ASSERT_EQ(phase, "fenced") << vm.Stderr();
  auto st = Api(sock, {{"op", "status"}});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ((*st)["ha"]["lease"]["expired"], true);
  auto un = Api(sock, {{"op", "unfence"}});
  EXPECT_FALSE(un.ok());
  EXPECT_EQ(un.status().code(), ErrorCode::kRefused) << un.status().message();
  EXPECT_FALSE(Api(sock, {{"op", "resume"}, {"force", true}}).ok());
  ASSERT_TRUE(Api(sock, {{"op", "lease"}, {"ttl_ms", 60000}}).ok());
  ASSERT_TRUE(Api(sock, {{"op", "unfence"}}).ok());
  ExpectVerifiesThenStop(dir, sock, vm);
}

}  // namespace
}  // namespace ferry::e2e
