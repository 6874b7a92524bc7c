// ha::Membership on a real 3-node Corosync cluster (label cluster): every agent sees the
// whole group, quorate, and every other agent's messages; when one host is cut off, the two
// others see a quorate 2-member view and the cut-off one loses quorum (the time each took is
// printed); after healing, all three are members again. The agents are membership_probe
// processes, one per host namespace, read through their JSON event lines. TestClusterTest
// checks the cluster itself: a crash drill, and Corosync's knet crypto (the running config
// says aes256/sha256; a host holding another authkey cannot join).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "ferry/base/clock.h"
#include "ferry/ha/corosync_conf.h"
#include "test_cluster.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

int64_t NowMs() { return static_cast<int64_t>(MonotonicMs()); }

// One membership_probe running in a host's namespace.
class Probe {
 public:
  Probe(const TestCluster& c, int i, const std::string& group, int seconds)
      : process_(c.In(i, {FERRY_MEMBERSHIP_PROBE, group, std::to_string(seconds)}),
                 c.dir() + "/probe-" + std::to_string(i)) {}
  ~Probe() {
    process_.Signal(SIGTERM);
    process_.Wait(3000);
  }

  std::vector<json> Events() const {
    std::vector<json> events;
    std::stringstream lines(process_.Stdout());
    std::string line;
    while (std::getline(lines, line)) {
      json e = json::parse(line, nullptr, false);
      if (!e.is_discarded()) events.push_back(e);
    }
    return events;
  }
  // The time of the first view at or after `since_ms` with exactly `members` (empty: any) and
  // this quorate flag, if one arrived.
  std::optional<int64_t> ViewSeen(const std::vector<uint32_t>& members, bool quorate, int64_t since_ms) const {
    for (const json& e : Events()) {
      if (e["event"] != "view" || e["t_ms"].get<int64_t>() < since_ms) continue;
      if (e["quorate"].get<bool>() != quorate) continue;
      if (!members.empty() && e["members"].get<std::vector<uint32_t>>() != members) continue;
      return e["t_ms"].get<int64_t>();
    }
    return std::nullopt;
  }
  std::set<uint32_t> Senders() const {
    std::set<uint32_t> from;
    for (const json& e : Events()) {
      if (e["event"] == "message") from.insert(e["from"].get<uint32_t>());
    }
    return from;
  }
  std::string Output() const { return process_.Stdout() + process_.Stderr(); }

 private:
  Process process_;
};

class MembershipCluster : public ::testing::TestWithParam<int> {};

TEST_P(MembershipCluster, ViewsQuorumAndMessagesAcrossAPartition) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network and mount namespaces for the corosync hosts)";
  ClusterOptions options;
  options.token_ms = GetParam();
  auto cluster = TestCluster::Create(3, options);
  if (!cluster.ok() && cluster.status().code() == ErrorCode::kUnsupported) GTEST_SKIP() << cluster.status().message();
  ASSERT_TRUE(cluster.ok()) << cluster.status().message();
  TestCluster& c = **cluster;

  const std::string group = "ferry-probe-" + std::to_string(getpid());
  std::vector<std::unique_ptr<Probe>> probes;
  for (int i = 0; i < 3; ++i) probes.push_back(std::make_unique<Probe>(c, i, group, 120));
  const std::vector<uint32_t> all = {1, 2, 3};
  auto dump = [&] {
    std::string s;
    for (int i = 0; i < 3; ++i) s += "probe " + std::to_string(i) + ":\n" + probes[i]->Output();
    return s;
  };

  bool formed = WaitUntil([&] {
    for (auto& p : probes) {
      if (!p->ViewSeen(all, true, 0) || p->Senders() != std::set<uint32_t>(all.begin(), all.end())) return false;
    }
    return true;
  }, 20000);
  ASSERT_TRUE(formed) << "the probes did not all see 3 quorate members and each other's messages\n" << dump();

  // Host 2 is cut off: the majority reforms without it, the minority loses quorum.
  const int64_t cut = NowMs();
  ASSERT_TRUE(c.Partition(2).ok());
  std::optional<int64_t> p0, p1, p2;
  bool split = WaitUntil([&] {
    p0 = probes[0]->ViewSeen({1, 2}, true, cut);
    p1 = probes[1]->ViewSeen({1, 2}, true, cut);
    p2 = probes[2]->ViewSeen({}, false, cut);
    return p0 && p1 && p2;
  }, 30000);
  ASSERT_TRUE(split) << "no quorate 2-member view on hosts 0 and 1 and inquorate view on host 2\n" << dump();
  EXPECT_FALSE(c.Quorate(2)) << "corosync-quorumtool on host 2 still says quorate";
  const int64_t majority_ms = std::max(*p0, *p1) - cut, minority_ms = *p2 - cut;
  std::printf("token %d ms: majority saw the 2-member view after %lld ms, the minority lost quorum after %lld ms\n",
              GetParam(), static_cast<long long>(majority_ms), static_cast<long long>(minority_ms));
  RecordProperty("majority_view_ms", std::to_string(majority_ms));
  RecordProperty("minority_inquorate_ms", std::to_string(minority_ms));

  const int64_t healed = NowMs();
  ASSERT_TRUE(c.Heal(2).ok());
  std::vector<std::optional<int64_t>> back(3);
  bool merged = WaitUntil([&] {
    for (int i = 0; i < 3; ++i) back[i] = probes[i]->ViewSeen(all, true, healed);
    return back[0] && back[1] && back[2];
  }, 30000);
  ASSERT_TRUE(merged) << "the probes did not see 3 quorate members again after healing\n" << dump();
  std::printf("token %d ms: all three saw 3 quorate members again %lld ms after healing\n", GetParam(),
              static_cast<long long>(std::max({*back[0], *back[1], *back[2]}) - healed));
}

// TestCluster's own crash drill: a killed corosync costs its host the membership, the other
// two stay quorate, and a restarted one rejoins.
TEST(TestClusterTest, KillAndRestartCorosync) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network and mount namespaces for the corosync hosts)";
  auto cluster = TestCluster::Create(3, ClusterOptions{});
  if (!cluster.ok() && cluster.status().code() == ErrorCode::kUnsupported) GTEST_SKIP() << cluster.status().message();
  ASSERT_TRUE(cluster.ok()) << cluster.status().message();
  TestCluster& c = **cluster;
  ASSERT_TRUE(c.KillCorosync(2).ok());
  EXPECT_TRUE(WaitUntil([&] { return c.Quorate(0, 2) && c.Quorate(1, 2); }, 10000)) << c.Log(0);
  EXPECT_FALSE(c.Quorate(2));
  ASSERT_TRUE(c.RestartCorosync(2).ok());
  ASSERT_TRUE(c.WaitQuorate(2, true, 15000).ok()) << c.Log(2);
  EXPECT_TRUE(WaitUntil([&] { return c.Quorate(0, 3) && c.Quorate(2, 3); }, 10000)) << c.Log(2);
}

// The cluster runs the config users get (`ferry ha corosync-conf`): every running corosync
// reports knet crypto on (aes256 / sha256) with the cluster's one authkey, and knet loaded its
// crypto module.
TEST(TestClusterTest, CorosyncRunsWithKnetCryptoOn) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network and mount namespaces for the corosync hosts)";
  auto cluster = TestCluster::Create(3, ClusterOptions{});
  if (!cluster.ok() && cluster.status().code() == ErrorCode::kUnsupported) GTEST_SKIP() << cluster.status().message();
  ASSERT_TRUE(cluster.ok()) << cluster.status().message();
  TestCluster& c = **cluster;
  for (int i = 0; i < c.size(); ++i) {
    auto cipher = c.Cmap(i, "totem.crypto_cipher");
    auto hash = c.Cmap(i, "totem.crypto_hash");
    auto keyfile = c.Cmap(i, "totem.keyfile");
    ASSERT_TRUE(cipher.ok() && hash.ok() && keyfile.ok())
        << cipher.status().message() << hash.status().message() << keyfile.status().message();
    EXPECT_EQ(*cipher, "aes256") << "host " << i;
    EXPECT_EQ(*hash, "sha256") << "host " << i;
    EXPECT_EQ(*keyfile, c.authkey()) << "host " << i;
    EXPECT_NE(c.Log(i).find("crypto_nss.so has been loaded"), std::string::npos) << c.Log(i);
  }
}

// knet really authenticates with the key: a host restarted with another authkey cannot
// decrypt its peers' packets and never joins; with the cluster's key back, it does.
TEST(TestClusterTest, AHostWithAnotherAuthkeyCannotJoin) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network and mount namespaces for the corosync hosts)";
  auto cluster = TestCluster::Create(3, ClusterOptions{});
  if (!cluster.ok() && cluster.status().code() == ErrorCode::kUnsupported) GTEST_SKIP() << cluster.status().message();
  ASSERT_TRUE(cluster.ok()) << cluster.status().message();
  TestCluster& c = **cluster;
  // Hosts 0 and 1 keep the key they loaded at start; host 2 reads the file again on restart.
  const std::string good = c.authkey() + ".good";
  ASSERT_TRUE(c.KillCorosync(2).ok());
  ASSERT_EQ(::rename(c.authkey().c_str(), good.c_str()), 0);
  ASSERT_TRUE(ha::WriteCorosyncAuthkey(c.authkey()).ok());
  ASSERT_TRUE(c.RestartCorosync(2).ok());
  EXPECT_TRUE(WaitUntil([&] { return c.Log(2).find("Unable to decrypt packet") != std::string::npos; }, 10000))
      << c.Log(2);
  EXPECT_FALSE(WaitUntil([&] { return c.Quorate(2); }, 4000)) << "host 2 joined with another key\n" << c.Log(2);
  EXPECT_TRUE(c.Quorate(0, 2) && c.Quorate(1, 2)) << c.Log(0);

  ASSERT_TRUE(c.KillCorosync(2).ok());
  ASSERT_EQ(::rename(good.c_str(), c.authkey().c_str()), 0);
  ASSERT_TRUE(c.RestartCorosync(2).ok());
  ASSERT_TRUE(c.WaitQuorate(2, true, 15000).ok()) << c.Log(2);
  EXPECT_TRUE(WaitUntil([&] { return c.Quorate(0, 3) && c.Quorate(2, 3); }, 10000)) << c.Log(2);
}

INSTANTIATE_TEST_SUITE_P(Token, MembershipCluster, ::testing::Values(300, 1000),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "ms";
                         });

}  // namespace
}  // namespace ferry::e2e
