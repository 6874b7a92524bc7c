// The AgentSim cluster (agent_sim.h) through moves, with a host killed at every step of one,
// and through agent deaths, hangs and cut-offs with and without the watchdog lease.
#include <gtest/gtest.h>

#include "agent_sim.h"

namespace ferry::ha::sim {
namespace {

// A move of kv from a to c (b holds its standby), with host a killed `k` steps into it.
// Returns whether the VM serves again on exactly one host, and from which generation.
std::pair<bool, std::string> MoveThenKillSource(int k) {
  Sim sim;
  if (!sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100)) return {false, "never protected"};
  sim.Run(3);
  if (!sim.agent("b").Handle({{"op", "move"}, {"vm", "kv"}, {"to", "c"}}).value("ok", false)) return {false, "move refused"};
  sim.Run(k);
  sim.KillHost("a");
  const bool back = sim.RunUntil([&] { return !sim.PrimaryHost().empty(); }, 300);
  if (!back) return {false, "lost"};
  return {sim.world.boots == 1, sim.PrimaryHost()};
}

TEST(AgentSim, AMoveCompletesByHandoverToItsTarget) {
  Sim sim;
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(3);
  ASSERT_TRUE(sim.agent("b").Handle({{"op", "move"}, {"vm", "kv"}, {"to", "c"}}).value("ok", false));
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "c"; }, 200));
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("c"); }, 200));
}

TEST(AgentSim, AHostKilledAtAnyStepOfAMoveNeverLosesTheVm) {
  std::string lost;
  for (int k = 0; k <= 30; ++k) {
    auto [ok, where] = MoveThenKillSource(k);
    if (!ok) lost += " " + std::to_string(k) + "(" + where + ")";
  }
  EXPECT_TRUE(lost.empty()) << "killed at these steps of the move, the VM was lost:" << lost;
}


// Without a lease a VMM dies with its agent: a killed agent is a failed-over host.
TEST(AgentSim, WithoutALeaseAKilledAgentsVmIsFailedOverAtOnce) {
  Sim sim;
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.KillAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 10)) << "within promote_delay_ms and a few ticks";
  sim.RestartAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("b"); }, 200));
}

// Found by review: an agent restarted at once, before the backup failed over, knew no claim
// and booted the VM afresh (blank RAM) as if it had never run. It now learns the claim from
// the others' reports and lets the backup's replica take over.
TEST(AgentSim, WithoutALeaseAnAgentRestartedAtOnceNeverBootsTheVmAfresh) {
  Sim sim;
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  sim.KillAgent("a");
  sim.RestartAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 50));  // Step(): nothing acked is lost
  EXPECT_EQ(sim.world.boots, 1) << "booted afresh";
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("b"); }, 200));
}

// With a 2 s lease, an agent restarted within it adopts its VMMs: no failover, no fence,
// protection never lost.
TEST(AgentSim, WithALeaseAnAgentRestartedInTimeAdoptsItsVmmsWithoutAFailover) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  sim.KillAgent("a");
  sim.Run(10);  // 1 s without an agent on a
  EXPECT_EQ(sim.PrimaryHost(), "a") << "the VMM outlives its agent and serves on";
  sim.RestartAgent("a");
  sim.Run(50);
  EXPECT_EQ(sim.PrimaryHost(), "a");
  EXPECT_EQ(sim.world.Find("a", "kv")->generation, 1u) << "no failover";
  EXPECT_FALSE(sim.world.Find("a", "kv")->ever_fenced);
  EXPECT_TRUE(sim.ProtectedOn("a", "b"));
  EXPECT_EQ(sim.world.boots, 1);
  EXPECT_TRUE(HasEvent(sim.agent("a"), "adopted"));
}

// An agent gone longer than the lease: its VMM fences itself, the backup waits the lease
// before it claims, and the restarted agent finds a stale VMM and ends it.
TEST(AgentSim, WithALeaseAnAgentGoneTooLongIsFailedOverAfterItsVmmFencedItself) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  const uint64_t killed = sim.now;
  sim.KillAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 60));
  EXPECT_GE(sim.now - killed, 2000u) << "the backup waited for the lease";
  EXPECT_TRUE(sim.world.Find("a", "kv")->fenced) << "the old VMM fenced itself";
  sim.RestartAgent("a");
  ASSERT_TRUE(sim.RunUntilStalePrimaryGone("a")) << "the stale primary on a must go";
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("b"); }, 300));
  EXPECT_EQ(sim.world.boots, 1);
}

// The new owner's agent restarts between its failover claim and the promotion: it learns the
// claim from the others' reports (not having seen it agreed) and must still promote its
// replica, or the VM stays down.
TEST(AgentSim, ANewOwnerRestartedBetweenItsClaimAndThePromotionStillPromotes) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  const uint64_t g = sim.world.Find("a", "kv")->generation;
  sim.KillHost("a");
  ASSERT_TRUE(sim.RunUntil([&] {
    const Claim* c = sim.agent("b").state().claim("kv");
    return c && c->generation > g;
  }, 100));
  if (sim.PrimaryHost() == "b") GTEST_SKIP() << "promoted in the step that agreed the claim: no window";
  sim.KillAgent("b");
  sim.RestartAgent("b");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 100)) << "the replica was never promoted";
}

// The standby's agent restarted in time: the VM stays where it is and is protected on b again.
// Its host left the view meanwhile, so the owner disowned the replica there (the output let
// go at the next generation) before re-protecting.
TEST(AgentSim, WithALeaseTheStandbysAgentRestartedInTimeKeepsItsStandby) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  sim.KillAgent("b");
  sim.Run(5);
  sim.RestartAgent("b");
  sim.Run(50);
  EXPECT_TRUE(sim.ProtectedOn("a", "b"));
  EXPECT_EQ(sim.world.Find("a", "kv")->generation, 2u);
}


// The hung-agent rule: an agent SIGSTOPped stays in Corosync's view but says nothing. With a
// lease its VMM fences itself when the lease runs out, and the backup, counting the silent
// agent as gone, fails the VM over after the lease (not before: never two copies, which
// Step() asserts at every 100 ms); the agent continued finds a newer generation and its stale
// primary goes.
TEST(AgentSim, WithALeaseAHungAgentIsFailedOverOnceItsVmmFencedItself) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  const uint64_t stopped = sim.now;
  sim.StopAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 100)) << "a hung agent's VM must not stay down";
  EXPECT_GE(sim.now - stopped, 2000u) << "the backup waited for the lease";
  EXPECT_LE(sim.now - stopped, 6000u) << "silence (3 s) plus the lease bound the outage";
  EXPECT_TRUE(sim.world.Find("a", "kv")->fenced) << "the old VMM fenced itself";
  sim.ContinueAgent("a");
  ASSERT_TRUE(sim.RunUntilStalePrimaryGone("a")) << "the stale primary on a must go";
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("b"); }, 300));
  EXPECT_EQ(sim.max_serving, 1u);
}

// With a lease, an agent stopped for less than it (1.8 s of 2 s) wakes without fencing its
// primary: it did not run, so its own messages could not come back; it reports, hears itself,
// and the VM serves on at the same generation, protected by the same standby. It fenced it
// before (cut off by its own reckoning), which broke the replication and moved the VM to a
// new generation, where `ferry drill --stop-agent` expects nothing.
TEST(AgentSim, WithALeaseAnAgentStoppedWithinItWakesWithoutFencing) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  sim.StopAgent("a");
  sim.Run(18);
  sim.ContinueAgent("a");
  sim.Run(30);
  FakeVmm* p = sim.world.Find("a", "kv");
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->ever_fenced) << "fenced on waking";
  EXPECT_EQ(p->generation, 1u);
  EXPECT_TRUE(sim.ProtectedOn("a", "b"));
  EXPECT_TRUE(HasEvent(sim.agent("a"), "stalled"));
  EXPECT_FALSE(HasEvent(sim.agent("a"), "fence"));
}

// The primary's VMM hangs and its agent is restarted meanwhile: the new agent adopts the
// silent VMM (VmmExecutor finds it by its socket's peer), kills it once it was silent for
// hung_vmm_ms, and the VM fails over to its standby; never two copies (a hung primary counts
// as serving).
TEST(AgentSim, WithALeaseAHungVmmAdoptedByARestartedAgentIsKilledAndFailedOver) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.world.Find("a", "kv")->hung = true;
  sim.KillAgent("a");
  sim.Run(5);
  sim.RestartAgent("a");
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("b"); }, 400)) << "a hung VMM's VM must not stay down";
  EXPECT_TRUE(HasEvent(sim.agent("a"), "adopted"));
  EXPECT_EQ(sim.world.Find("a", "kv") == nullptr || sim.world.Find("a", "kv")->role == Role::kStandby, true);
  EXPECT_EQ(sim.max_serving, 1u);
}

// Without a lease a hung agent's VMM serves on unfenced: failing it over would make two
// copies, so nothing changes.
TEST(AgentSim, WithoutALeaseAHungAgentChangesNothing) {
  Sim sim;
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.StopAgent("a");
  sim.Run(100);  // 10 s
  EXPECT_EQ(sim.PrimaryHost(), "a");
  EXPECT_EQ(sim.world.Find("a", "kv")->generation, 1u);
  sim.ContinueAgent("a");
  sim.Run(20);
  EXPECT_TRUE(sim.ProtectedOn("a", "b"));
}

// An agent that runs but is cut off from the group's messages (its own included) stops
// renewing its leases before the others count it as gone: its VMM fences itself first, the
// backup takes over after the lease, never two copies; once its messages flow again its
// stale primary goes.
TEST(AgentSim, WithALeaseAnAgentCutOffFromTheGroupsMessagesLetsItsLeasesRunOut) {
  Sim sim(2000);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.ProtectedOn("a", "b"); }, 100));
  sim.Run(5);
  sim.Mute("a", true);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.PrimaryHost() == "b"; }, 100));
  // a hears nothing: its VMM serves on only until its lease runs out (Step() checks at every
  // 100 ms that never two serve).
  FakeVmm* old = sim.world.Find("a", "kv");
  ASSERT_NE(old, nullptr);
  EXPECT_TRUE(old->fenced) << "its VMM ran its lease out";
  EXPECT_TRUE(HasEvent(sim.agent("a"), "lease-held"));
  sim.Mute("a", false);
  ASSERT_TRUE(sim.RunUntil([&] {
    FakeVmm* old = sim.world.Find("a", "kv");
    return !old || old->role == Role::kStandby;
  }, 100));
  EXPECT_EQ(sim.max_serving, 1u);
}

}  // namespace
}  // namespace ferry::ha::sim
