#include <gtest/gtest.h>

#include "ferry/ha/cluster_state.h"

namespace ferry::ha {
namespace {

using replication::ReplicationState;
using replication::StandbyState;

ClusterConfig Config() {
  auto c = ClusterConfig::Parse(nlohmann::json::parse(R"({
    "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/a"},
              {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/b"},
              {"name":"c","nodeid":3,"address":"127.31.0.3","dir":"/tmp/c"}],
    "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100}]})"));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

Instance Primary(uint64_t gen, std::optional<ReplicationState> replication = ReplicationState::kProtected, const std::string& to = "b") {
  Instance i;
  i.vm = "kv";
  i.role = Role::kPrimary;
  i.phase = vmhost::Phase::kRunning;
  i.generation = gen;
  i.replication = replication;
  i.standby_host = to;
  return i;
}

Instance Standby(uint64_t gen, uint64_t committed, StandbyState state = StandbyState::kReplicating) {
  Instance i;
  i.vm = "kv";
  i.role = Role::kStandby;
  i.standby_state = state;
  i.generation = gen;
  i.committed = committed;
  return i;
}

// Every member reports; returns the state as agent `self` sees it.
void Hear(ClusterState& s, const std::map<std::string, std::vector<Instance>>& reports) {
  for (const auto& [host, list] : reports) ASSERT_TRUE(s.OnMessage(host, ClusterState::ReportMessage(host, list)));
}

TEST(Decide, NoQuorumFencesThePrimariesAndNothingElse) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a"}, false);
  auto acts = Decide(c, "a", s, {Primary(1)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kFence);
}

TEST(Decide, NothingBeforeEveryMemberReported) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"b", "c"}, true);
  Hear(s, {{"b", {Standby(1, 5)}}});
  EXPECT_TRUE(Decide(c, "b", s, {Standby(1, 5)}, {}).empty());
}

TEST(Decide, TheStandbyClaimsTheNextGenerationWhenTheOwnerLeavesThenPromotes) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 5)}}, {"c", {}}});
  EXPECT_TRUE(Decide(c, "b", s, {Standby(1, 5)}, {}).empty()) << "the owner is alive";
  s.OnView({"b", "c"}, true, 1000);
  Hear(s, {{"b", {Standby(1, 5)}}, {"c", {}}});
  s.now_ms = 1000 + c.promote_delay_ms - 1;
  EXPECT_TRUE(Decide(c, "b", s, {Standby(1, 5)}, {}).empty()) << "the cut-off host is given time to fence";
  s.now_ms = 1000 + c.promote_delay_ms;
  auto acts = Decide(c, "b", s, {Standby(1, 5)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kClaim);
  EXPECT_EQ(acts[0].generation, 2u);
  EXPECT_EQ(acts[0].why, "failover");
  // c does nothing about it.
  EXPECT_TRUE(Decide(c, "c", s, {}, {}).empty());
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ClaimMessage("kv", Claim{2, "b", "failover"})));
  acts = Decide(c, "b", s, {Standby(1, 5)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kPromote);
  EXPECT_EQ(acts[0].generation, 2u);
}

// Found by AgentSimDrills: the owner stopped replicating to b (b's host had left the view)
// and released its output; b came back with that ended replica, and the owner's host died
// before b's next tick ended it. b claimed the failover and promoted a replica the released
// output had outrun (47 acknowledged writes lost). An ended standby never takes over; one
// whose state is unknown (its probe unanswered) waits.
TEST(Decide, AStandbyItsPrimaryEndedNeverTakesOver) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Hear(s, {{"a", {Primary(1, ReplicationState::kStopped, "b")}}, {"b", {Standby(1, 5, StandbyState::kEnded)}}, {"c", {}}});
  s.OnView({"b", "c"}, true, 1000);  // a's host dies
  Hear(s, {{"b", {Standby(1, 5, StandbyState::kEnded)}}, {"c", {}}});
  s.now_ms = 1000 + c.promote_delay_ms;
  auto acts = Decide(c, "b", s, {Standby(1, 5, StandbyState::kEnded)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill) << "an ended replica claimed the failover";
  Instance unknown = Standby(1, 5);
  unknown.standby_state.reset();
  EXPECT_TRUE(Decide(c, "b", s, {unknown}, {}).empty()) << "a standby not answering waits";
  EXPECT_EQ(Decide(c, "b", s, {Standby(1, 5, StandbyState::kPrimaryLost)}, {}).at(0).kind, Action::kClaim);
}

// Measured on a 3-host test cluster with only Corosync cut: the owner's "unprotected" claim of
// generation 2, sent as it was being cut off, came back to it alone in a view of its own while
// the majority had given generation 2 to the standby's host; the owner then unfenced as "still
// the owner": two copies served. A claim delivered in a minority view owns nothing, and the
// majority's claim, learnt from reports on rejoin, makes the old primary stale.
// Found by review: the owner moved its protection from b to c make-before-break; c holds a
// checkpoint (the output may have left on its acknowledgement) while b still holds its older
// replica. The owner dies: only c may claim, or b could win and promote a replica that
// acknowledged writes outran.
TEST(Decide, AfterASwitchOnlyTheStandbyTheOwnerLastProtectedOnTakesOver) {
  auto c = Config();
  for (const char* self : {"b", "c"}) {
    ClusterState s(c, self);
    s.OnView({"a", "b", "c"}, true);
    Hear(s, {{"a", {Primary(1, ReplicationState::kProtected, "c")}}, {"b", {Standby(1, 40)}}, {"c", {Standby(1, 3)}}});
    ASSERT_TRUE(s.OnMessage("a", ClusterState::ProtectMessage("kv", "c", 1)));
    s.OnView({"b", "c"}, true, 1000);
    Hear(s, {{"b", {Standby(1, 40)}}, {"c", {Standby(1, 3)}}});
    s.now_ms = 1000 + c.promote_delay_ms;
    const std::string me = self;
    auto acts = Decide(c, me, s, {me == "b" ? Standby(1, 40) : Standby(1, 3)}, {});
    if (me == "b") {
      EXPECT_TRUE(acts.empty()) << "b claimed over the standby that the owner switched to";
    } else {
      ASSERT_EQ(acts.size(), 1u);
      EXPECT_EQ(acts[0].kind, Action::kClaim);
      EXPECT_EQ(acts[0].why, "failover");
    }
  }
}

// Found by review: the old primary's handover went unanswered and the standby never ran the
// VM. The old primary stays sealed in commit-unknown; the standby must take over, or nothing
// ever runs the VM again.
TEST(Decide, AStandbyTakesOverFromAnOwnerWhoseHandoverToItWentUnanswered) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1, ReplicationState::kHandoverIndeterminate, "b")}}, {"b", {Standby(1, 9)}}, {"c", {}}});
  auto acts = Decide(c, "b", s, {Standby(1, 9)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kClaim);
  EXPECT_EQ(acts[0].generation, 2u);
  // The same owner replicating normally is alive: nothing.
  ClusterState t(c, "b");
  t.OnView({"a", "b", "c"}, true);
  Hear(t, {{"a", {Primary(1, ReplicationState::kProtected, "b")}}, {"b", {Standby(1, 9)}}, {"c", {}}});
  EXPECT_TRUE(Decide(c, "b", t, {Standby(1, 9)}, {}).empty());
}

// Claims learned from reports keep their reason (a restarted owner carries on), but a start
// claim learned so never boots a VM afresh.
TEST(Decide, ClaimsLearnedFromReportsKeepTheirReasonButNeverStart) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  std::map<std::string, Claim> theirs = {{"kv", Claim{4, "a", "unprotected"}}};
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ReportMessage("b", {}, nlohmann::json::object(), theirs)));
  ASSERT_NE(s.claim("kv"), nullptr);
  EXPECT_EQ(s.claim("kv")->generation, 4u);
  EXPECT_EQ(s.claim("kv")->why, "unprotected");
  theirs["kv"] = Claim{5, "a", "start"};
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ReportMessage("b", {}, nlohmann::json::object(), theirs)));
  EXPECT_EQ(s.claim("kv")->generation, 5u);
  EXPECT_EQ(s.claim("kv")->why, "report");
  // A mistyped claim changes nothing and throws nothing.
  EXPECT_FALSE(s.OnMessage("b", R"({"t":"report","host":"b","instances":[],"claims":[{"vm":"kv","generation":"x","host":"a"}]})"));
  EXPECT_EQ(s.claim("kv")->generation, 5u);
}

TEST(Decide, AClaimDeliveredInAMinorityViewOwnsNothing) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 5)}}, {"c", {}}});
  ASSERT_EQ(s.claim("kv")->generation, 1u);
  s.OnView({"a"}, false, 1000);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{2, "a", "unprotected"})));
  EXPECT_EQ(s.claim("kv")->generation, 1u) << "a minority view accepted a claim";
  s.OnView({"a", "b", "c"}, true, 5000);
  Hear(s, {{"a", {Primary(1, ReplicationState::kFailed)}}, {"b", {Primary(2, ReplicationState::kProtected, "c")}}, {"c", {}}});
  EXPECT_EQ(s.claim("kv")->host, "b");
  auto acts = Decide(c, "a", s, {Primary(1, ReplicationState::kFailed)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill) << "the old primary must stop, never unfence";
}

TEST(Decide, AStandbyWithoutACheckpointNeverPromotes) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 0, StandbyState::kSyncing)}}, {"c", {}}});
  s.OnView({"b", "c"}, true);
  Hear(s, {{"b", {Standby(1, 0, StandbyState::kPrimaryLost)}}, {"c", {}}});
  for (const auto& a : Decide(c, "b", s, {Standby(1, 0, StandbyState::kPrimaryLost)}, {})) EXPECT_NE(a.kind, Action::kClaim);
}

TEST(Decide, TheOldPrimaryLearnsTheNewGenerationFromReportsAndStops) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 5)}}, {"c", {}}});
  // a was cut off (fenced); b was promoted to generation 2 meanwhile. After healing:
  Instance fenced = Primary(1, ReplicationState::kFailed);
  fenced.fenced = true;
  s.OnView({"a", "b", "c"}, true);
  s.OnView({"a"}, false);
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {fenced}}, {"b", {Primary(2, ReplicationState::kProtected, "c")}}, {"c", {Standby(2, 9)}}});
  auto acts = Decide(c, "a", s, {fenced}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill) << acts[0].why;
  // The new owner takes its old home back as the backup, make-before-break: it asks a for a
  // standby while c still holds one, and switches only once a's is waiting. Not while a still
  // lists its stale primary:
  EXPECT_TRUE(Decide(c, "b", s, {Primary(2, ReplicationState::kProtected, "c")}, {}).empty());
  Hear(s, {{"a", {}}});
  acts = Decide(c, "b", s, {Primary(2, ReplicationState::kProtected, "c")}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kProtect);
  EXPECT_EQ(acts[0].host, "a");
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ProtectMessage("kv", "a", 2)));
  // a, asked while b replicates to c, starts the new standby.
  acts = Decide(c, "a", s, {}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kStartStandby);
  EXPECT_EQ(acts[0].host, "b") << "the standby accepts its owner only";
  Hear(s, {{"a", {Standby(2, 0, StandbyState::kWaiting)}}});
  acts = Decide(c, "b", s, {Primary(2, ReplicationState::kProtected, "c")}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kSwitchStandby);
  EXPECT_EQ(acts[0].host, "a");
  // c's replica is the fallback while b's output is held and a syncs; it goes once a protects.
  Hear(s, {{"b", {Primary(2, ReplicationState::kSyncing, "a")}}});
  s.protect_sent.clear();
  Instance c_lost = Standby(2, 9, StandbyState::kPrimaryLost);
  Instance held = Primary(2, ReplicationState::kSyncing, "a");
  held.output_held = true;
  Hear(s, {{"b", {held}}, {"c", {c_lost}}});
  EXPECT_TRUE(Decide(c, "c", s, {c_lost}, {}).empty()) << "the fallback must stay while output is held";
  Hear(s, {{"b", {Primary(2, ReplicationState::kProtected, "a")}}});
  acts = Decide(c, "c", s, {c_lost}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill);
}

TEST(Decide, OnlyThePreferredHostStartsANewVmAndOnlyOnce) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {}}, {"b", {}}, {"c", {}}});
  auto acts = Decide(c, "a", s, {}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kClaim);
  EXPECT_TRUE(Decide(c, "b", s, {}, {}).empty());
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  // A second claim of the same generation loses: the first delivered wins everywhere.
  ASSERT_TRUE(s.OnMessage("b", ClusterState::ClaimMessage("kv", Claim{1, "b", "start"})));
  EXPECT_EQ(s.claim("kv")->host, "a");
  acts = Decide(c, "a", s, {}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kStartPrimary);
  s.launched["kv"] = 1;
  EXPECT_TRUE(Decide(c, "a", s, {}, {}).empty()) << "a VM that died here is not booted afresh";
}

TEST(Decide, TheOwnerProtectsThenReplicatesOnceTheStandbyWaits) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Hear(s, {{"a", {Primary(1, std::nullopt)}}, {"b", {}}, {"c", {}}});
  auto acts = Decide(c, "a", s, {Primary(1, std::nullopt)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kProtect);
  EXPECT_EQ(acts[0].host, "b");
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ProtectMessage("kv", "b", 1)));
  auto b_acts = Decide(c, "b", s, {}, {});
  ASSERT_EQ(b_acts.size(), 1u);
  EXPECT_EQ(b_acts[0].kind, Action::kStartStandby);
  Hear(s, {{"b", {Standby(1, 0, StandbyState::kWaiting)}}});
  acts = Decide(c, "a", s, {Primary(1, std::nullopt)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kReplicate);
}

TEST(Decide, EvacuationHandsTheVmToItsStandby) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 7)}}, {"c", {}}});
  ASSERT_TRUE(s.OnMessage("c", ClusterState::EvacuateMessage("a", true)));
  auto acts = Decide(c, "a", s, {Primary(1)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kHandover);
  EXPECT_EQ(acts[0].host, "b");
  EXPECT_EQ(acts[0].generation, 2u);
}

// Found by AgentSimDrills: an evacuation lifted by a message that never arrived (its sender's
// host died with it queued) left one agent evacuating itself for good while the others had
// it lifted. Flags carry a version and ride on the reports; the newest wins everywhere.
TEST(ClusterState, EvacuationFlagsConvergeThroughTheReports) {
  auto c = Config();
  ClusterState a(c, "a"), fresh(c, "c");
  a.OnView({"a", "b", "c"}, true);
  fresh.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(a.OnMessage("c", ClusterState::EvacuateMessage("a", true, 1)));
  EXPECT_TRUE(a.evacuating("a"));
  // "a" missed the lift (seq 2); b's report carries it.
  ASSERT_TRUE(a.OnMessage("b", ClusterState::ReportMessage("b", {}, nlohmann::json::object(), {},
                                                           {{"a", ClusterState::Evacuation{false, 2}}})));
  EXPECT_FALSE(a.evacuating("a")) << "the lift in b's report did not reach a";
  // An older flag in a later report changes nothing.
  ASSERT_TRUE(a.OnMessage("c", ClusterState::ReportMessage("c", {}, nlohmann::json::object(), {},
                                                           {{"a", ClusterState::Evacuation{true, 1}}})));
  EXPECT_FALSE(a.evacuating("a"));
  EXPECT_EQ(a.evacuation_seq("a"), 2u);
  // An agent restarted (knowing nothing) learns a flag in force from the first report.
  ASSERT_TRUE(fresh.OnMessage("b", ClusterState::ReportMessage("b", {}, nlohmann::json::object(), {},
                                                               {{"b", ClusterState::Evacuation{true, 4}}})));
  EXPECT_TRUE(fresh.evacuating("b"));
  // A message without a version (an older sender) is newer than any.
  ASSERT_TRUE(fresh.OnMessage("a", ClusterState::EvacuateMessage("b", false)));
  EXPECT_FALSE(fresh.evacuating("b"));
  EXPECT_EQ(fresh.evacuation_seq("b"), 5u);
  // Two requests of one version (asked at once on two hosts): "on" wins, the same everywhere.
  ASSERT_TRUE(fresh.OnMessage("a", ClusterState::EvacuateMessage("c", true, 7)));
  ASSERT_TRUE(fresh.OnMessage("b", ClusterState::EvacuateMessage("c", false, 7)));
  EXPECT_TRUE(fresh.evacuating("c"));
}

// A member's message with a field of the wrong type or a name the cluster does not have (an
// agent of another version, a bug) changes nothing: not half of it, and throws nothing.
// Before, a report's instances and claims were applied up to the first bad field (an owner
// and generation taken from a message then refused), and a protect request naming no host of
// the cluster replaced the real one, so that a waiting standby it did not name was ended.
TEST(ClusterState, AMalformedMessageChangesNothingOfIt) {
  auto c = Config();
  // A state that has heard a claim, a protect request and every member's report; what of it
  // a message could change, as text.
  auto heard = [&c](ClusterState& s) {
    s.OnView({"a", "b", "c"}, true);
    ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
    ASSERT_TRUE(s.OnMessage("a", ClusterState::ProtectMessage("kv", "b", 1)));
    Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 3)}}, {"c", {}}});
  };
  auto seen = [](const ClusterState& s) {
    auto p = s.protect("kv");
    return s.ToJson().dump() + (p ? p->first + "/" + std::to_string(p->second) : "none") + "/" +
           std::to_string(s.evacuation_seq("b"));
  };
  ClusterState untouched(c, "a");
  heard(untouched);
  const std::string before = seen(untouched);
  const std::string b7 = R"({"vm":"kv","role":"primary","state":"running","generation":7})";
  for (const std::string& bad : std::vector<std::string>{
           // a valid instance, then a mistyped claim, a claim's reason or an evacuation's host
           R"({"t":"report","instances":[)" + b7 + R"(],"claims":[{"vm":"kv","generation":"x","host":"b"}]})",
           R"({"t":"report","instances":[)" + b7 + R"(],"claims":[{"vm":"kv","generation":8,"host":"b","why":7}]})",
           R"({"t":"report","instances":[],"claims":[{"vm":"kv","generation":8,"host":"b"}],)"
           R"("evacuations":[{"host":5,"seq":3,"on":true}]})",
           R"({"t":"report","instances":[],"evacuations":[{"host":"b","seq":3,"on":true}],"claims":[{"vm":[]}]})",
           // a protect request naming no host of the cluster, or no generation
           R"({"t":"protect","vm":"kv","host":"zz","generation":1})",
           R"({"t":"protect","vm":"kv","generation":1})",
           R"({"t":"protect","vm":"kv","host":"c","generation":0})",
           R"({"t":"protect","vm":"kv","host":"c","generation":-1})",
           R"({"t":"claim","vm":"kv","generation":"9","host":"b"})",
           R"({"t":"evacuate","host":"b","on":"yes"})",
           R"({"t":"move","vm":"kv","to":"c","on":"no"})",
           R"({"t":"report","instances":{"vm":"kv"}})",
           // a negative or fractional generation (read as 2^64-1, or rounded, before)
           R"({"t":"claim","vm":"kv","generation":-1,"host":"b"})",
           R"({"t":"claim","vm":"kv","generation":7.5,"host":"b"})",
           R"({"t":"claim","vm":"kv","generation":1e300,"host":"b"})",
           R"({"t":"report","instances":[{"vm":"kv","role":"primary","state":"running","generation":-1}]})",
           R"({"t":"report","instances":[],"claims":[{"vm":"kv","generation":-2,"host":"b"}]})",
           R"({"t":"report","instances":[{"vm":"kv","role":"standby","generation":1,"committed":-5}]})",
       }) {
    ClusterState s(c, "a");
    heard(s);
    EXPECT_FALSE(s.OnMessage("b", bad)) << bad;
    EXPECT_EQ(seen(s), before) << "changed by " << bad;
  }
}

TEST(Config, RejectsBadInput) {
  EXPECT_FALSE(ClusterConfig::Parse(nlohmann::json::parse(R"({"hosts": []})")).ok());
  auto dup = ClusterConfig::Parse(nlohmann::json::parse(R"({"hosts": [
      {"name":"a","nodeid":1,"address":"x","dir":"/t"},{"name":"a","nodeid":2,"address":"y","dir":"/t"}]})"));
  EXPECT_FALSE(dup.ok());
  auto bad_vm = ClusterConfig::Parse(nlohmann::json::parse(R"({"hosts": [{"name":"a","nodeid":1,"address":"x","dir":"/t"}],
      "vms": [{"name":"kv","guest":"g","primary":"nope","port":1}]})"));
  ASSERT_FALSE(bad_vm.ok());
  EXPECT_NE(bad_vm.status().message().find("nope"), std::string::npos);
  for (const char* hung : {"500", "-1", "\"10s\"", "1e12", "null"}) {
    auto h = ClusterConfig::Parse(nlohmann::json::parse(std::string(R"({"hung_vmm_ms": )") + hung +
                                                        R"(, "hosts": [{"name":"a","nodeid":1,"address":"x","dir":"/t"}]})"));
    EXPECT_FALSE(h.ok()) << "hung_vmm_ms " << hung;
  }
  auto never = ClusterConfig::Parse(nlohmann::json::parse(R"({"hung_vmm_ms": 0, "hosts": [{"name":"a","nodeid":1,"address":"x","dir":"/t"}]})"));
  ASSERT_TRUE(never.ok()) << never.status().message();
  EXPECT_EQ(never->hung_vmm_ms, 0u);
  for (const char* cap : {"0", "1", "-1", "\"64M\"", "1e12", "null"}) {
    auto h = ClusterConfig::Parse(nlohmann::json::parse(std::string(R"({"vm_log_max_mb": )") + cap +
                                                        R"(, "hosts": [{"name":"a","nodeid":1,"address":"x","dir":"/t"}]})"));
    EXPECT_FALSE(h.ok()) << "vm_log_max_mb " << cap;
  }
  EXPECT_EQ(never->vm_log_max_mb, 64u) << "the default";
}

}  // namespace
}  // namespace ferry::ha

namespace ferry::ha {
namespace {

// The standby's connection drops as the primary's host dies, before Corosync notices: the
// standby (the only replica) must stay until the owner is gone from the view or says the
// replication to it is over.
TEST(Decide, AStandbyThatLostItsPrimaryStaysUntilTheOwnerSaysSo) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  Hear(s, {{"a", {Primary(1)}}, {"b", {Standby(1, 9, StandbyState::kPrimaryLost)}}, {"c", {}}});
  for (const auto& a : Decide(c, "b", s, {Standby(1, 9, StandbyState::kPrimaryLost)}, {})) EXPECT_NE(a.kind, Action::kKill);
  Hear(s, {{"a", {Primary(1, ReplicationState::kFailed)}}});
  auto acts = Decide(c, "b", s, {Standby(1, 9, StandbyState::kPrimaryLost)}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill);
}

// A local VMM silent for hung_vmm_ms (a hung primary or standby) is killed, with quorum or
// without, busy or not, and nothing else is decided for its VM meanwhile; one silent for less
// is ridden out; hung_vmm_ms 0 never kills.
TEST(Decide, AVmmSilentPastTheHungBoundIsKilledWhateverElseHolds) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Instance silent = Primary(1);
  silent.phase.reset();  // not answering: reported as it last answered, without a phase
  silent.silent_ms = c.hung_vmm_ms - 1;
  Hear(s, {{"a", {silent}}, {"b", {Standby(1, 5)}}, {"c", {}}});
  for (const auto& a : Decide(c, "a", s, {silent}, {})) EXPECT_NE(a.kind, Action::kKill) << "killed before the bound";
  silent.silent_ms = c.hung_vmm_ms;
  auto acts = Decide(c, "a", s, {silent}, {"kv"});
  ASSERT_EQ(acts.size(), 1u) << "busy with it: the hung VMM is killed all the same";
  EXPECT_EQ(acts[0].kind, Action::kKill);
  EXPECT_NE(acts[0].why.find("hung"), std::string::npos) << acts[0].why;
  s.OnView({"a"}, false, 2000);  // and without quorum: killed, not fenced (a fence would hang)
  acts = Decide(c, "a", s, {silent}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill);
  Instance standby = Standby(1, 5);
  standby.standby_state.reset();
  standby.silent_ms = c.hung_vmm_ms + 5000;
  acts = Decide(c, "b", s, {standby}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill) << "a hung standby too";
  c.hung_vmm_ms = 0;
  EXPECT_TRUE(Decide(c, "b", s, {standby}, {}).empty()) << "hung_vmm_ms 0: never killed";
}

// A standby that lost its primary does not end its replica on the word of an owner's primary
// that is not answering: a restarted agent's first report can carry nothing else of it (no
// replication, no standby named), which read as "done with this standby".
TEST(Decide, AStandbyKeepsItsReplicaWhileTheOwnersPrimaryIsNotAnswering) {
  auto c = Config();
  ClusterState s(c, "b");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Instance unknown = Primary(1, std::nullopt, "");
  unknown.phase.reset();
  const Instance lost = Standby(1, 5, StandbyState::kPrimaryLost);
  Hear(s, {{"a", {unknown}}, {"b", {lost}}, {"c", {}}});
  EXPECT_TRUE(Decide(c, "b", s, {lost}, {}).empty()) << "the replica ended while its owner's state was unknown";
  Hear(s, {{"a", {Primary(1, ReplicationState::kProtected, "c")}}});
  auto acts = Decide(c, "b", s, {lost}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kKill) << "once the owner answers, protected elsewhere: no longer used";
}

// A silent VMM reads as such in reports and status, and comes back from a report as not
// answering, its silence kept (what `ferry ha status` prints as SILENT).
TEST(Instance, ASilentVmmIsReportedNotAnsweringWithItsSilence) {
  Instance i = Instance::NotAnswering("kv", Primary(3), Role::kStandby, 1, std::nullopt);
  EXPECT_TRUE(i.primary()) << "what it last answered, not what it was started as";
  EXPECT_EQ(i.generation, 3u);
  EXPECT_FALSE(i.phase.has_value());
  EXPECT_EQ(i.ToJson()["state"], "starting");
  i.silent_ms = 12345;
  const auto j = i.ToJson();
  EXPECT_EQ(j["state"], "not-answering");
  auto back = Instance::FromJson(j);
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->phase.has_value());
  EXPECT_EQ(back->silent_ms, 12345u);
  EXPECT_FALSE(back->Differs(i)) << "silence alone is no change worth a report";
  const Instance promoted = Instance::NotAnswering("kv", Standby(1, 5), Role::kStandby, 1, std::pair{Role::kPrimary, uint64_t{2}});
  EXPECT_TRUE(promoted.primary()) << "promoted by this agent since its last answer";
  EXPECT_EQ(promoted.generation, 2u);
  const Instance never = Instance::NotAnswering("kv", std::nullopt, Role::kStandby, 4, std::nullopt);
  EXPECT_TRUE(never.standby());
  EXPECT_EQ(never.generation, 4u);
}

// A local VMM that did not answer its last probe is asked nothing that waits on its answer
// (unfence, release, promote): what it last said may be stale, and the call held the agent's
// thread. Fencing it goes on without quorum (the request waits in its socket).
TEST(Decide, AVmmThatDoesNotAnswerIsAskedNothingButAFence) {
  auto c = Config();
  ClusterState s(c, "a");
  s.OnView({"a", "b", "c"}, true);
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{1, "a", "start"})));
  Instance fenced = Primary(1);
  fenced.phase = vmhost::Phase::kFenced;
  fenced.fenced = true;
  Hear(s, {{"a", {fenced}}, {"b", {Standby(1, 5)}}, {"c", {}}});
  auto acts = Decide(c, "a", s, {fenced}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kUnfence) << "answering, fenced and still the owner: unfenced";
  Instance quiet = fenced;
  quiet.phase.reset();  // its probe unanswered: reported as it last answered, without a phase
  EXPECT_TRUE(Decide(c, "a", s, {quiet}, {}).empty()) << "unfenced while it does not answer";
  quiet.phase = vmhost::Phase::kFenced;
  quiet.silent_ms = 2000;
  EXPECT_TRUE(Decide(c, "a", s, {quiet}, {}).empty()) << "unfenced while silent";

  // The owner's own unprotected claim: the VMM takes the generation and releases its output.
  ASSERT_TRUE(s.OnMessage("a", ClusterState::ClaimMessage("kv", Claim{2, "a", "unprotected"})));
  Instance held = Primary(1, ReplicationState::kFailed);
  held.output_held = true;
  acts = Decide(c, "a", s, {held}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kReleaseOutput);
  held.phase.reset();
  EXPECT_TRUE(Decide(c, "a", s, {held}, {}).empty()) << "released while it does not answer";

  // A failover claim onto a standby that does not answer: its promotion waits.
  ClusterState sb(c, "b");
  sb.OnView({"b", "c"}, true);
  ASSERT_TRUE(sb.OnMessage("b", ClusterState::ClaimMessage("kv", Claim{2, "b", "failover"})));
  Instance replica = Standby(1, 5, StandbyState::kPrimaryLost);
  Hear(sb, {{"b", {replica}}, {"c", {}}});
  acts = Decide(c, "b", sb, {replica}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kPromote);
  replica.standby_state.reset();
  EXPECT_TRUE(Decide(c, "b", sb, {replica}, {}).empty()) << "promoted while it does not answer";

  // Without quorum, a primary that does not answer is still fenced.
  Instance running = Primary(1);
  running.phase.reset();
  s.OnView({"a"}, false, 2000);
  acts = Decide(c, "a", s, {running}, {});
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, Action::kFence);
}

}  // namespace
}  // namespace ferry::ha
