#include "ferry/ha/balance.h"
#include "ferry/ha/json_fields.h"

#include <gtest/gtest.h>

namespace ferry::ha {
namespace {

using nlohmann::json;

// Hosts a, b, c with 2 CPUs and 1 GiB each; VMs v1..v3 (256 MiB) all prefer a.
ClusterConfig Config(const std::string& policy) {
  json j = json::parse(R"({
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/a","cpus":2,"mem_bytes":1073741824},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/b","cpus":2,"mem_bytes":1073741824},
              {"name":"c","nodeid":3,"address":"127.31.0.3","dir":"/tmp/c","cpus":2,"mem_bytes":1073741824}],
    "vms": [{"name":"v1","guest":"g","mem":"256M","primary":"a","backup":"b","port":7101},
            {"name":"v2","guest":"g","mem":"256M","primary":"a","backup":"b","port":7102},
            {"name":"v3","guest":"g","mem":"256M","primary":"a","backup":"c","port":7103}]})");
  j["policy"] = json::parse(policy);
  auto c = ClusterConfig::Parse(j);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

Instance Running(const std::string& vm, uint64_t gen = 1) {
  Instance i;
  i.vm = vm;
  i.role = Role::kPrimary;
  i.phase = vmhost::Phase::kRunning;
  i.generation = gen;
  return i;
}

// Every host reports its VMs with their CPU use (% of one CPU).
void Report(ClusterState& s, const std::map<std::string, std::map<std::string, double>>& load) {
  s.OnView({"a", "b", "c"}, true);
  for (const std::string h : {"a", "b", "c"}) {
    std::vector<Instance> list;
    json vms = json::object();
    auto it = load.find(h);
    if (it != load.end()) {
      for (const auto& [vm, cpu] : it->second) {
        list.push_back(Running(vm));
        vms[vm] = {{"cpu_pct", cpu}};
      }
    }
    ASSERT_TRUE(s.OnMessage(h, ClusterState::ReportMessage(h, list, {{"host", {{"cpus", 2}}}, {"vms", vms}})));
  }
}

TEST(Balance, NothingToDoUnderTheThresholds) {
  auto c = Config(R"({"max_cpu_pct": 60})");
  ClusterState s(c, "a");
  Report(s, {{"a", {{"v1", 50}, {"v2", 40}}}});  // 45% of 2 CPUs
  auto p = PlanBalance(c, s, 100000);
  EXPECT_TRUE(p.moves.empty());
  EXPECT_TRUE(p.notes.empty());
}

TEST(Balance, AnOverloadedHostSendsOneBusyVmToTheLeastLoaded) {
  auto c = Config(R"({"max_cpu_pct": 60})");
  ClusterState s(c, "a");
  Report(s, {{"a", {{"v1", 95}, {"v2", 90}}}, {"b", {{"v3", 80}}}});  // a: 92%, b: 40%
  auto p = PlanBalance(c, s, 100000);
  ASSERT_EQ(p.moves.size(), 1u) << p.ToJson().dump();
  EXPECT_EQ(p.moves[0].from, "a");
  EXPECT_EQ(p.moves[0].to, "c");  // b would be at 85%
  EXPECT_EQ(p.moves[0].vm, "v2");  // the smaller of the two brings a under 60%
  EXPECT_NE(p.moves[0].why.find("CPU"), std::string::npos) << p.moves[0].why;
}

TEST(Balance, NoRoomAnywhereIsANoteNotAMove) {
  auto c = Config(R"({"max_cpu_pct": 40})");
  ClusterState s(c, "a");
  Report(s, {{"a", {{"v1", 95}, {"v2", 90}}}, {"b", {{"v3", 80}}}});
  s.OnView({"a", "b"}, true);  // c left
  Report(s, {{"a", {{"v1", 95}, {"v2", 90}}}, {"b", {{"v3", 80}}}});
  s.OnView({"a", "b"}, true);
  auto p = PlanBalance(c, s, 100000);
  EXPECT_TRUE(p.moves.empty()) << p.ToJson().dump();
  ASSERT_FALSE(p.notes.empty());
}

TEST(Balance, AntiAffineVmsAreSeparated) {
  auto c = Config(R"({"anti_affinity": [["v1", "v2"]]})");
  ClusterState s(c, "a");
  Report(s, {{"a", {{"v1", 5}, {"v2", 5}}}});
  auto p = PlanBalance(c, s, 100000);
  ASSERT_EQ(p.moves.size(), 1u);
  EXPECT_EQ(p.moves[0].vm, "v2");
  EXPECT_NE(p.moves[0].to, "a");
}

TEST(Balance, MemoryThreshold) {
  auto c = Config(R"({"max_mem_pct": 60})");
  ClusterState s(c, "a");
  Report(s, {{"a", {{"v1", 1}, {"v2", 1}, {"v3", 1}}}});  // 768 MiB of 1 GiB = 75%
  auto p = PlanBalance(c, s, 100000);
  ASSERT_EQ(p.moves.size(), 1u) << p.ToJson().dump();
  EXPECT_EQ(p.moves[0].from, "a");
}

TEST(Balance, ARecentlyPlacedVmStays) {
  auto c = Config(R"({"max_cpu_pct": 60, "settle_s": 5})");
  ClusterState s(c, "a");
  s.now_ms = 100000;  // the claims (from the reports) are heard now
  Report(s, {{"a", {{"v1", 95}, {"v2", 90}}}});
  EXPECT_TRUE(PlanBalance(c, s, 101000).moves.empty());
  EXPECT_EQ(PlanBalance(c, s, 106000).moves.size(), 1u);
}

TEST(Balance, BadPoliciesAreRefused) {
  json j = json::parse(R"({"hosts":[{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/a"}],
                           "vms":[{"name":"v1","guest":"g","primary":"a","port":7101}]})");
  j["policy"] = {{"anti_affinity", {{"v1", "nope"}}}};
  EXPECT_FALSE(ClusterConfig::Parse(j).ok());
  j["policy"] = {{"max_cpu_pct", -1}};
  EXPECT_FALSE(ClusterConfig::Parse(j).ok());
  j["policy"] = {{"anti_affinity", {{"v1"}}}};
  EXPECT_FALSE(ClusterConfig::Parse(j).ok());
}

// Decide()'s actions for v1 only (v2 and v3 are never started in these tests).
std::vector<Action> ForV1(std::vector<Action> acts) {
  std::erase_if(acts, [](const Action& a) { return a.vm != "v1"; });
  return acts;
}

// Figures another process sent, read as counts and sizes (a peer's mem_total_bytes, a VMM's
// epochs): only a number from 0 below 2^64 counts; a cast of the rest was undefined behaviour.
TEST(JsonFields, ACountIsANumberFromZeroBelow2To64OrTheDefault) {
  const json j = json::parse(R"({"n": 7, "big": 18446744073709551615, "frac": 7.9, "neg": -1, "huge": 1e300,
                                 "text": "5", "null": null, "edge": 18446744073709551616.0})");
  EXPECT_EQ(CountField(j, "n"), 7u);
  EXPECT_EQ(CountField(j, "big"), UINT64_MAX);
  EXPECT_EQ(CountField(j, "frac"), 7u);
  for (const char* bad : {"neg", "huge", "text", "null", "edge", "missing"}) EXPECT_EQ(CountField(j, bad, 3), 3u) << bad;
  EXPECT_EQ(CountField(json::array(), "n", 3), 3u);
}

TEST(Move, TheOwnerReprotectsToTheTargetThenHandsOver) {
  auto c = Config("{}");
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  Instance p = Running("v1");
  p.replication = replication::ReplicationState::kProtected;
  p.standby_host = "b";
  Instance sb;
  sb.vm = "v1";
  sb.role = Role::kStandby;
  sb.standby_state = replication::StandbyState::kReplicating;
  sb.generation = 1;
  sb.committed = 4;
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ReportMessage("a", {p})));
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ReportMessage("b", {sb})));
  ASSERT_TRUE(s.OnMessage("c", ClusterState::ReportMessage("c", {})));
  ASSERT_TRUE(s.OnMessage("a", ClusterState::MoveMessage("v1", "c")));
  ASSERT_NE(s.move("v1"), nullptr);
  // Make-before-break: a standby on c first, while b's keeps receiving checkpoints.
  auto acts = ForV1(Decide(c, "a", s, {p}, {}));
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kProtect);
  EXPECT_EQ(acts[0].host, "c");
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ProtectMessage("v1", "c", 1)));  // the request, delivered
  Instance waiting;
  waiting.vm = "v1";
  waiting.role = Role::kStandby;
  waiting.standby_state = replication::StandbyState::kWaiting;
  waiting.generation = 1;
  ASSERT_TRUE(s.OnMessage("c", ClusterState::ReportMessage("c", {waiting})));
  acts = ForV1(Decide(c, "a", s, {p}, {}));
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kSwitchStandby);
  EXPECT_EQ(acts[0].host, "c");
  // Protected by c now: hand over at the next generation.
  p.standby_host = "c";
  acts = ForV1(Decide(c, "a", s, {p}, {}));
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kHandover);
  EXPECT_EQ(acts[0].host, "c");
  EXPECT_EQ(acts[0].generation, 2u);
  // The target's claim ends the move.
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("v1", Claim{2, "c", "handover"})));
  EXPECT_EQ(s.move("v1"), nullptr);
}

TEST(Move, EndsWhenTheTargetLeaves) {
  auto c = Config("{}");
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::MoveMessage("v1", "c")));
  s.OnView({"a", "b"}, true);
  EXPECT_EQ(s.move("v1"), nullptr);
}

}  // namespace
}  // namespace ferry::ha
