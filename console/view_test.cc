#include "ferry/console/view.h"

#include <gtest/gtest.h>

namespace ferry::console {
namespace {

using nlohmann::json;

ha::ClusterConfig Config() {
  auto c = ha::ClusterConfig::Parse(json::parse(R"({"name":"t",
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/a"},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/b"}],
    "vms": [{"name":"kv","guest":"g","mem":"64M","vcpus":2,"primary":"a","backup":"b","port":7100}]})"));
  EXPECT_TRUE(c.ok());
  return *c;
}

// An agent's status answer: kv runs on a, protected by b, moving to b.
json Status(const std::string& replication, const json& vm_stats) {
  return json::parse(R"({"host":"a","cluster":{"quorate":true,"members":["a","b"],
    "hosts":[{"name":"a","member":true,"evacuating":false,"stats":{"host":{"cpus":2,"cpu_pct":40}}},
             {"name":"b","member":true,"evacuating":false,"stats":null}],
    "vms":[{"name":"kv","owner":"a","generation":3,"state":"running","standby_host":"b","moving_to":"b"}]}})")
      .patch(json::array({{{"op", "add"}, {"path", "/cluster/vms/0/replication"}, {"value", replication}},
                          {{"op", "add"}, {"path", "/cluster/hosts/0/stats/vms"}, {"value", {{"kv", vm_stats}}}}}));
}

TEST(View, HostsVmsAndASyncingMove) {
  json s = {{"replication", "syncing"}, {"cpu_pct", 80.0},
            {"sync", {{"round", 1}, {"round_pages", 1000}, {"round_sent_bytes", 1024000}, {"rate_bytes_per_s", 5e8}}}};
  json v = BuildView(Config(), Status("syncing", s), {}, {});
  EXPECT_EQ(v["cluster"], "t");
  EXPECT_TRUE(v["quorate"].get<bool>());
  ASSERT_EQ(v["hosts"].size(), 2u);
  EXPECT_EQ(v["hosts"][0]["health"], "ok");
  EXPECT_EQ(v["hosts"][0]["cpu_pct"], 40);
  const json& kv = v["vms"][0];
  EXPECT_EQ(kv["host"], "a");
  EXPECT_EQ(kv["vcpus"], 2);
  EXPECT_EQ(kv["cpu_pct"], 80.0);
  EXPECT_EQ(kv["protection"]["standby_host"], "b");
  EXPECT_EQ(kv["move"]["phase"], "syncing");
  EXPECT_EQ(kv["move"]["total_bytes"], 4096000.0);
  EXPECT_EQ(kv["move"]["bytes_left"], 4096000.0 - 1024000);
}

TEST(View, NoAgentMeansEveryHostDown) {
  json v = BuildView(Config(), nullptr, {}, {});
  EXPECT_FALSE(v["quorate"].get<bool>());
  EXPECT_EQ(v["hosts"][0]["health"], "down");
  EXPECT_EQ(v["vms"][0]["host"], "");
}

TEST(View, HistoryOfMigrationsFailoversAndDrills) {
  std::vector<json> events = {
      {{"t_ms", 3000}, {"host", "b"}, {"kind", "promoted"}, {"vm", "kv"}, {"detail", "checkpoint 9"}},
      {{"t_ms", 1000}, {"host", "a"}, {"kind", "handed-over"}, {"vm", "kv"}, {"from", "a"}, {"to", "b"}, {"downtime_ms", 70.5}},
      {{"t_ms", 2200}, {"host", "b"}, {"kind", "member-left"}, {"vm", ""}, {"detail", "a"}},
      {{"t_ms", 2500}, {"host", "b"}, {"kind", "protect"}, {"vm", "kv"}},
  };
  std::vector<json> drills = {{{"t_ms", 4000}, {"fault", "kill-vm"}, {"target", "kv"}, {"scorecard", {{"vm", "kv"}, {"rto_ms", 850.0}}}}};
  json h = History(events, drills);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0]["kind"], "migration");
  EXPECT_EQ(h[0]["downtime_ms"], 70.5);
  EXPECT_EQ(h[1]["kind"], "failover");
  EXPECT_EQ(h[1]["downtime_ms"], 800.0);  // promoted 800 ms after a left b's view
  EXPECT_EQ(h[2]["kind"], "drill");
  EXPECT_EQ(h[2]["downtime_ms"], 850.0);
}

TEST(View, HandingOverPredictsTheFinalCheckpoint) {
  json s = {{"replication", "protected"}, {"dirty_pages_per_s", 4000.0}, {"interval_ms", 25.0},
            {"pause_ms_p50", 2.0}, {"ship_ms_p50", 8.0}};
  json m = MoveProgress("b", s, "b");
  EXPECT_EQ(m["phase"], "handing-over");
  EXPECT_EQ(m["bytes_left"], 100 * 4096.0);
  EXPECT_EQ(m["predicted_downtime_ms"], 10.0);
  EXPECT_EQ(MoveProgress("b", s, "c")["phase"], "re-protecting");
}

}  // namespace
}  // namespace ferry::console
