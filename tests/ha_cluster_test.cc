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
#include "test_cluster.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

struct Cluster {
  std::unique_ptr<TestCluster> tc;
  std::string config;
  std::vector<std::unique_ptr<Process>> agents;
};

// A 3-host cluster with agents running and `vms` kvstore VMs (kv0 on h0 backed by h1, kv1 on
// h0 backed by h2), each protected. Skips (returns false) where it cannot run.
bool StartCluster(Cluster* c, int vms, std::string* skip) {
  if (geteuid() != 0) {
    *skip = "needs root (network namespaces)";
    return false;
  }
  if (!HaveKvm()) {
    *skip = "no usable /dev/kvm";
    return false;
  }
  ClusterOptions o;
  o.token_ms = 300;
  auto tc = TestCluster::Create(3, o);
  if (!tc.ok()) {
    *skip = tc.status().message();
    return false;
  }
  c->tc = std::move(tc).value();
  TestCluster& t = *c->tc;
  c->config = t.WriteHaConfig(vms);
  for (int i = 0; i < 3; ++i) {
    c->agents.push_back(std::make_unique<Process>(t.In(i, {FerryBin(), "ha", "agent", "--config", c->config}),
                                                  t.host_dir(i) + "/agent"));
  }
  return true;
}

json HaStatus(const Cluster& c, const std::string& host = "") {
  std::vector<std::string> args = {"ha", "status", "--config", c.config, "--json"};
  if (!host.empty()) args.insert(args.end(), {"--host", host});
  auto r = RunFerry(args, c.tc->dir() + "/status", 10000);
  return r.code == 0 ? LastJsonLine(r.out) : json();
}

json VmOf(const json& status, const std::string& vm) {
  if (!status.is_object()) return json::object();
  for (const auto& v : status["cluster"]["vms"]) {
    if (v.value("name", "") == vm) return v;
  }
  return json::object();
}

bool AllProtected(const Cluster& c, int vms, int timeout_ms) {
  return WaitUntil(
      [&] {
        json s = HaStatus(c);
        for (int k = 0; k < vms; ++k) {
          if (VmOf(s, "kv" + std::to_string(k)).value("replication", "") != "protected") return false;
        }
        return true;
      },
      timeout_ms);
}

std::string Logs(const Cluster& c) {
  std::string out;
  for (size_t i = 0; i < c.agents.size(); ++i) {
    out += "--- agent h" + std::to_string(i) + "\n" + c.agents[i]->Stderr();
    for (const char* vm : {"kv0", "kv1"}) {
      std::ifstream in(c.tc->host_dir(i) + "/" + vm + ".log");
      std::string line, text;
      while (std::getline(in, line)) {
        if (line.rfind("kvstore", 0) != 0) text += line + "\n";  // the VMM's own lines, not the guest's
      }
      if (!text.empty()) out += "--- h" + std::to_string(i) + " " + vm + ".log\n" + text;
    }
  }
  return out;
}

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

#define START_CLUSTER(c, vms)                         \
  Cluster c;                                          \
  {                                                   \
    std::string skip;                                 \
    if (!StartCluster(&c, vms, &skip)) GTEST_SKIP() << skip; \
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
