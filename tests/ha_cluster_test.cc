// The HA manager on a real 3-host Corosync cluster (network namespaces, label `cluster`):
// `ferry ha agent` on every host, a kvstore VM started and protected by the agents, then
// `ferry drill` kills or cuts off its host under load and the scorecard must show the backup
// promoted, no acknowledged write lost and never two primaries; evacuation moves two loaded
// VMs off a host with their clients working throughout.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "e2e_util.h"
#include "ha_cluster_util.h"
#include "test_cluster.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

// Runs `ferry drill` with `fault` (e.g. {"--kill-host", "h0"}); prints and returns the
// scorecard, failing the test if the drill did.
json RunDrill(const Cluster& c, const std::vector<std::string>& fault, int timeout_ms) {
  std::vector<std::string> args = {"drill", "--config", c.config, "--json"};
  args.insert(args.end(), fault.begin(), fault.end());
  auto d = RunFerry(args, c.tc->dir() + "/drill", timeout_ms);
  json card = LastJsonLine(d.out);
  std::printf("scorecard: %s\n", card.dump().c_str());
  EXPECT_EQ(d.code, 0) << d.out << d.err << Logs(c);
  return card;
}

TEST(HaCluster, KillingThePrimarysHostPromotesTheBackupWithoutLosingAWrite) {
  START_CLUSTER(c, 1);
  ASSERT_TRUE(AllProtected(c, 1, 60000)) << HaStatus(c).dump() << Logs(c);
  EXPECT_EQ(VmOf(HaStatus(c), "kv0")["owner"], "h0");
  json card = RunDrill(c, {"--kill-host", "h0"}, 90000);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(card["to"], "h1");
  EXPECT_EQ(card["lost_writes"], 0);
  EXPECT_EQ(card["split_brain"], false);
  EXPECT_GT(card["acked_puts"].get<uint64_t>(), 100u);
  EXPECT_GE(card["detect_ms"].get<int64_t>(), 0);
  // Protection is restored on the remaining host.
  EXPECT_TRUE(WaitUntil([&] { return VmOf(HaStatus(c, "h1"), "kv0").value("standby_host", "") == "h2"; }, 60000))
      << HaStatus(c, "h1").dump() << Logs(c);
}

TEST(HaCluster, APartitionedPrimaryFencesAndRejoinsAsTheBackup) {
  START_CLUSTER(c, 1);
  ASSERT_TRUE(AllProtected(c, 1, 60000)) << HaStatus(c).dump() << Logs(c);
  json card = RunDrill(c, {"--partition-host", "h0"}, 120000);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(card["to"], "h1");
  EXPECT_EQ(card["lost_writes"], 0);
  EXPECT_EQ(card["split_brain"], false);
  EXPECT_EQ(card["fenced_before_promote"], true) << card;
  EXPECT_EQ(card["rejoined_as"], "standby") << card << Logs(c);
  json s = HaStatus(c, "h0");
  EXPECT_EQ(VmOf(s, "kv0")["owner"], "h1") << s;
}

TEST(HaCluster, EvacuatingAHostMovesBothLoadedVmsWithTheirClientsWorking) {
  START_CLUSTER(c, 2);
  ASSERT_TRUE(AllProtected(c, 2, 90000)) << HaStatus(c).dump() << Logs(c);
  TestCluster& t = *c.tc;
  std::vector<std::unique_ptr<Process>> clients;
  for (int k = 0; k < 2; ++k) {
    clients.push_back(std::make_unique<Process>(
        t.hosts().InClient({FerryBin(), "kv-load", "--server", TestHosts::guest_address(k) + ":7000", "--rate", "300",
                            "--keys", "64", "--duration-s", "8", "--timeout-ms", "3000", "--json"}),
        t.dir() + "/client" + std::to_string(k)));
  }
  usleep(1500 * 1000);
  auto e = RunFerry({"ha", "evacuate", "h0", "--config", c.config, "--host", "h2", "--timeout-s", "60", "--json"},
                    t.dir() + "/evacuate", 90000);
  ASSERT_EQ(e.code, 0) << e.out << e.err << Logs(c);
  json s = HaStatus(c, "h2");
  for (const auto& h : s["cluster"]["hosts"]) {
    if (h["name"] == "h0") {
      EXPECT_TRUE(h["instances"].empty()) << s;
    }
  }
  for (int k = 0; k < 2; ++k) {
    json v = VmOf(s, "kv" + std::to_string(k));
    EXPECT_NE(v["owner"], "h0") << v;
    EXPECT_EQ(v["state"], "running") << v;
  }
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(clients[k]->Wait(30000), 0) << clients[k]->Stdout() << clients[k]->Stderr() << Logs(c);
    json r = LastJsonLine(clients[k]->Stdout());
    std::printf("kv%d client during evacuation: %s\n", k, r.dump().c_str());
    EXPECT_EQ(r["lost_puts"], 0);
    EXPECT_EQ(r["stale_reads"], 0);
    EXPECT_EQ(r["unreflected_replies"], 0);
    EXPECT_LT(r["client_gap_ms"].get<double>(), 1000.0) << "the client stalled during the move";
  }
}

}  // namespace
}  // namespace ferry::e2e
