// Live migration on real KVM: memcheck migrated on loopback and between two namespace hosts
// passes full verification on the destination; wrong or missing keys are refused on both
// ends; a killed destination, a corrupted and a truncated stream leave the source running and
// intact with nothing running twice; a dirtier faster than the link converges by throttling,
// and without auto-converge gives up at its deadline with the source running; 220 strangers
// holding connections to a keyed destination neither delay nor stop the real source.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <optional>
#include <thread>

#include "e2e_util.h"
#include "test_pki.h"
#include "fault_proxy.h"
#include "ferry/base/clock.h"
#include "ferry/base/unique_fd.h"
#include "ferry/migrate/accept.h"
#include "migrate_util.h"
#include "test_hosts.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

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

// Writes a PEM file (owner-only, as a private key must be).
std::string WritePem(const TempDir& dir, const std::string& name, const std::string& pem) {
  const std::string path = dir.File(name);
  std::ofstream(path) << pem;
  ::chmod(path.c_str(), 0600);
  return path;
}

TEST(MigrateE2E, MemcheckBetweenNamespaceHostsWithCertificates) {
  REQUIRE_KVM();
  auto hosts = TestHosts::Create(2);
  if (!hosts.ok()) GTEST_SKIP() << hosts.status().message();
  TempDir dir;
  migrate::testing::TestPki pki, stranger("Stranger CA");
  const std::string dst_ip = (*hosts)->address(1);
  auto dst_cert = pki.Issue({"host1", dst_ip}), src_cert = pki.Issue({"host0"}), bad_cert = stranger.Issue({"host0"});
  const std::string ca = WritePem(dir, "ca.pem", pki.ca_pem());
  auto src = StartGuest(dir, "src", "memcheck", "128M", {}, hosts->get(), 0);
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", dst_ip + ":4412",
                           {"--tls-cert", WritePem(dir, "dst.pem", dst_cert.cert_pem), "--tls-key",
                            WritePem(dir, "dst.key", dst_cert.key_pem), "--tls-ca", ca},
                           hosts->get(), 1);
  // A source whose certificate another CA signed is refused on both ends; the VM runs on.
  auto bad = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--tls-cert",
                                         WritePem(dir, "bad.pem", bad_cert.cert_pem), "--tls-key",
                                         WritePem(dir, "bad.key", bad_cert.key_pem), "--tls-ca", ca}),
                        dir.File("bad"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("refused our certificate"), std::string::npos) << bad.err;
  EXPECT_TRUE(WaitUntil([&] { return dst.process->Stderr().find("not signed by our --tls-ca") != std::string::npos; }, 5000))
      << dst.process->Stderr();
  ExpectRunning(dir.File("src.sock"));
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--tls-cert",
                                       WritePem(dir, "src.pem", src_cert.cert_pem), "--tls-key",
                                       WritePem(dir, "src.key", src_cert.key_pem), "--tls-ca", ca, "--streams", "3",
                                       "--verify", "--json"}),
                      dir.File("mig"));
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  json s = LastJsonLine(r.out);
  EXPECT_TRUE(s["verify_passed"].get<bool>()) << s["verify_report"];
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  ExpectVerifies(dir.File("dst.sock"));
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst.process->Wait(20000), 0);
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
  // The source itself will not send guest memory in the clear to another host...
  auto r = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address}),
                    dir.File("mig"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("in the clear"), std::string::npos) << r.err;
  // ... and with --insecure (warned), the keyless destination still refuses it.
  auto insecure = RunCommand((*hosts)->In(0, {FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to", dst.address,
                                              "--insecure"}),
                             dir.File("mig-insecure"));
  EXPECT_EQ(insecure.code, 1);
  EXPECT_NE(insecure.err.find("WARNING: --insecure"), std::string::npos) << insecure.err;
  EXPECT_NE(insecure.err.find("loopback peers only"), std::string::npos) << insecure.err;
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
  // A keyed connection is TLS 1.3 with the key as its PSK: a wrong key fails its handshake.
  EXPECT_NE(wrong.err.find("key differs"), std::string::npos) << wrong.err;
  auto none = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", dst.address}, dir.File("none"));
  EXPECT_EQ(none.code, 1);
  EXPECT_TRUE(WaitUntil([&] {
    std::string e = dst.process->Stderr();
    return e.find("key differs") != std::string::npos && e.find("does not speak TLS") != std::string::npos;
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
// clear error and exits; the source runs on and passes verification. Keyed: the relay sits
// on the path of a TLS session (after its handshake) and cannot recompute anything.
void DamagedStream(FaultProxy::Fault fault, const std::string& dest_message, bool keyed = false) {
  TempDir dir;
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  std::vector<std::string> key;
  if (keyed) key = {"--key", WriteKey(dir, "key", "a-relay-test-key-0123456789abcdef")};
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0", key);
  uint16_t port = static_cast<uint16_t>(std::stoi(dst.address.substr(dst.address.rfind(':') + 1)));
  FaultProxy proxy(port, /*victim_connection=*/1, /*offset=*/4u << 20, fault);
  std::vector<std::string> args = {"migrate", "--api", dir.File("src.sock"), "--to", "127.0.0.1:" + std::to_string(proxy.port())};
  args.insert(args.end(), key.begin(), key.end());
  auto r = RunFerry(args, dir.File("mig"));
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

// Issue 18: a host on the path of a keyed migration flips one byte of a page frame after the
// handshake. The XXH3 frame checksum it could recompute in the clear is inside the TLS record
// now; the record's AEAD tag fails, the destination refuses, the source runs on and verifies.
TEST(MigrateE2E, ARelayThatFlipsAByteOfAKeyedMigrationMakesItFailCleanly) {
  REQUIRE_KVM();
  DamagedStream(FaultProxy::Fault::kFlipByte, "a record failed authentication", /*keyed=*/true);
}

// Issue 18: a tap on the path of a keyed migration sees none of the guest's pages. memcheck
// stamps every page with "MEMCHECK" (little-endian "KCEHCMEM"); the same guest migrated back
// in the clear through a tap shows it, so the check can fail.
TEST(MigrateE2E, AWireTapOnAKeyedMigrationSeesNoneOfTheGuestsPages) {
  REQUIRE_KVM();
  TempDir dir;
  const std::string stamp = "KCEHCMEM";
  const std::string key = WriteKey(dir, "key", "a-wire-tap-test-key-0123456789ab");
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0", {"--key", key});
  uint16_t port = static_cast<uint16_t>(std::stoi(dst.address.substr(dst.address.rfind(':') + 1)));
  FaultProxy tap(port, /*victim_connection=*/-1, 0, FaultProxy::Fault::kNone);
  tap.Capture(512u << 20);
  auto r = RunFerry({"migrate", "--api", dir.File("src.sock"), "--to", "127.0.0.1:" + std::to_string(tap.port()), "--key", key,
                     "--compress", "none", "--verify", "--json"},
                    dir.File("mig"));
  ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
  EXPECT_TRUE(LastJsonLine(r.out)["verify_passed"].get<bool>());
  EXPECT_TRUE(WaitUntil([&] { return tap.CapturedBytes() > (64u << 20); }, 10000)) << tap.CapturedBytes() << " bytes tapped";
  EXPECT_FALSE(tap.Captured(stamp)) << "guest page contents crossed the wire in the clear";
  // The control: back to this host in the clear (loopback peers need no key), through a tap.
  auto back = StartIncoming(dir, "back", "127.0.0.1:0");
  uint16_t back_port = static_cast<uint16_t>(std::stoi(back.address.substr(back.address.rfind(':') + 1)));
  FaultProxy clear_tap(back_port, -1, 0, FaultProxy::Fault::kNone);
  clear_tap.Capture(512u << 20);
  auto plain = RunFerry({"migrate", "--api", dir.File("dst.sock"), "--to", "127.0.0.1:" + std::to_string(clear_tap.port()),
                         "--compress", "none"},
                        dir.File("mig-back"));
  ASSERT_EQ(plain.code, 0) << plain.err << back.process->Stderr();
  EXPECT_TRUE(WaitUntil([&] { return clear_tap.Captured(stamp); }, 10000)) << "the tap cannot see a plaintext migration";
  ExpectVerifies(dir.File("back.sock"));
  EXPECT_TRUE(Api(dir.File("back.sock"), {{"op", "stop"}, {"force", true}}).ok());
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

// TCP connections to a destination that never authenticate: `silent` send nothing, `slow`
// send the first bytes of a hello and stall. A thread replaces each one the destination
// drops (refused at its handshake deadline), so they occupy it for as long as they live.
class Strangers {
 public:
  Strangers(const std::string& address, int silent, int slow) : slow_(slow) {
    auto ep = migrate::ParseEndpoint(address);
    if (!ep.ok()) return;
    port_ = ep->port;
    for (int i = 0; i < silent + slow; ++i) {
      fds_.push_back(Dial(i >= silent));
      opened_ += fds_.back().valid();
    }
    refresher_ = std::thread([this] { Refresh(); });
  }
  ~Strangers() {
    stop_ = true;
    if (refresher_.joinable()) refresher_.join();
  }  // the sockets close with fds_
  int opened() const { return opened_; }  // at first
  uint64_t replaced() const { return replaced_; }

 private:
  // Non-blocking, so a full backlog bounds the wait (1 s) instead of stalling the refresher.
  UniqueFd Dial(bool slow) const {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd.valid()) return fd;
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      pollfd p{fd.get(), POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      if (errno != EINPROGRESS || ::poll(&p, 1, 1000) != 1 ||
          ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        return UniqueFd();
      }
    }
    if (slow) {
      auto header = migrate::EncodeHeader(migrate::MsgType::kHello, 0, {});
      if (::send(fd.get(), header.data(), 10, MSG_NOSIGNAL) != 10) return UniqueFd();
    }
    return fd;
  }

  void Refresh() {
    const int total = static_cast<int>(fds_.size());
    std::vector<pollfd> p(total);
    while (!stop_) {
      for (int i = 0; i < total; ++i) p[i] = pollfd{fds_[i].get(), POLLIN | POLLRDHUP, 0};
      if (::poll(p.data(), p.size(), 50) <= 0) continue;
      for (int i = 0; i < total && !stop_; ++i) {
        if (!(p[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) continue;
        fds_[i] = Dial(i >= total - slow_);  // the destination refused it (or is gone)
        ++replaced_;
      }
    }
  }

  int slow_ = 0;
  int opened_ = 0;
  uint16_t port_ = 0;
  std::vector<UniqueFd> fds_;  // owned by the refresher thread while it runs
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> replaced_{0};
  std::thread refresher_;
};

int ThreadCount(pid_t pid) {
  int n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

// A peer that holds the key authenticates as a data stream of no session: returns how long
// its handshake took (the destination then refuses it as unexpected and waits on), or -1.
double KeyedHandshakeMs(const std::string& address, const std::string& key_path) {
  auto ep = migrate::ParseEndpoint(address);
  auto key = migrate::LoadKey(key_path);
  if (!ep.ok() || !key.ok()) return -1;
  migrate::Session assigned{};
  uint64_t t0 = MonotonicNs();
  auto ch = migrate::ConnectPeer(*ep, "tcp", migrate::Security::Keyed(*key), 10000, migrate::Role::kData, 0, migrate::NewSession(), &assigned);
  double ms = (MonotonicNs() - t0) / 1e6;
  EXPECT_TRUE(ch.ok()) << ch.status().message();
  return ch.ok() ? ms : -1;
}

// 220 strangers hold handshakes (a thread each) on `dst`; a keyed handshake past them is
// still quick.
void ExpectQuickHandshakePast(const Strangers& strangers, const Destination& dst, const std::string& key) {
  ASSERT_EQ(strangers.opened(), 220);
  ASSERT_TRUE(WaitUntil([&] { return ThreadCount(dst.process->pid()) >= 220; }, 10000))
      << ThreadCount(dst.process->pid());
  double handshake_ms = KeyedHandshakeMs(dst.address, key);
  std::printf("a keyed handshake past 220 strangers took %.1f ms\n", handshake_ms);
  EXPECT_GE(handshake_ms, 0);
  EXPECT_LT(handshake_ms, 1000) << "the strangers delayed the handshake";
}

// No guest needed: the destination's handshakes and its cancel, with strangers attached.
TEST(MigrateE2E, StrangersDelayNeitherAHandshakeNorTheCancelOfIncoming) {
  TempDir dir;
  std::string key = WriteKey(dir, "key", "the-destination-key-0123456789");
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0", {"--key", key});
  ASSERT_FALSE(dst.address.empty());
  Strangers strangers(dst.address, 200, 20);
  ASSERT_NO_FATAL_FAILURE(ExpectQuickHandshakePast(strangers, dst, key));
  // Refused at their 2 s deadline (and replaced): the destination waits on for its source.
  EXPECT_TRUE(WaitUntil([&] { return strangers.replaced() >= 220; }, 10000)) << strangers.replaced();
  auto refusals = [&] {
    std::string err = dst.process->Stderr();
    size_t n = 0;
    for (size_t at = 0; (at = err.find("ferry incoming: handshake: ", at)) != std::string::npos; ++at) ++n;
    for (size_t at = 0; (at = err.find("no handshake within 2000 ms", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  EXPECT_TRUE(WaitUntil([&] { return refusals() >= 220; }, 5000)) << refusals();
  EXPECT_NE(dst.process->Stderr().find("unexpected connection"), std::string::npos);  // the probe
  EXPECT_EQ(dst.process->Wait(0), -1);
  uint64_t t0 = MonotonicNs();
  dst.process->Signal(SIGTERM);
  EXPECT_EQ(dst.process->Wait(5000), 1) << dst.process->Stderr();
  double exit_ms = (MonotonicNs() - t0) / 1e6;
  std::printf("ferry incoming exited %.0f ms after SIGTERM, 220 strangers attached\n", exit_ms);
  EXPECT_LT(exit_ms, 1000);
}

TEST(MigrateE2E, StrangersHoldingConnectionsNeitherDelayNorStopTheRealSource) {
  REQUIRE_KVM();
  TempDir dir;
  std::string key = WriteKey(dir, "key", "the-destination-key-0123456789");
  auto src = StartGuest(dir, "src", "memcheck", "128M");
  AwaitMemcheckBusy(dir.File("src.sock"));
  auto dst = StartIncoming(dir, "dst", "127.0.0.1:0", {"--key", key});
  {
    Strangers strangers(dst.address, 200, 20);
    ASSERT_NO_FATAL_FAILURE(ExpectQuickHandshakePast(strangers, dst, key));

    uint64_t t0 = MonotonicNs();
    auto r = RunFerry(
        {"migrate", "--api", dir.File("src.sock"), "--to", dst.address, "--key", key, "--verify", "--json"},
        dir.File("mig"), 90000);
    double wall_ms = (MonotonicNs() - t0) / 1e6;
    ASSERT_EQ(r.code, 0) << r.err << dst.process->Stderr();
    json s = LastJsonLine(r.out);
    std::printf("migrated with 220 strangers: total_ms %.0f (ferry migrate %.0f ms wall), %llu strangers replaced\n",
                s["total_ms"].get<double>(), wall_ms, static_cast<unsigned long long>(strangers.replaced()));
    EXPECT_TRUE(s["verify_passed"].get<bool>()) << s["verify_report"];
    // Sequentially, the source would wait out 20 s per stranger ahead of it and give up.
    EXPECT_LT(s["total_ms"].get<double>(), 20000);
  }
  EXPECT_EQ(src->Wait(20000), 0) << src->Stderr();
  ExpectRunning(dir.File("dst.sock"));
  ExpectVerifies(dir.File("dst.sock"));
  EXPECT_NE(dst.process->Stderr().find("unexpected connection"), std::string::npos);  // the probe
  EXPECT_TRUE(Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}}).ok());
  EXPECT_EQ(dst.process->Wait(20000), 0) << dst.process->Stderr();
}

}  // namespace
}  // namespace ferry::e2e
