#include "ferry/vmhost/lifecycle.h"

#include <gtest/gtest.h>

#include <set>

namespace ferry::vmhost {
namespace {

const Event kRequests[] = {Event::kPause,     Event::kResume,        Event::kForceResume, Event::kStop,
                           Event::kSnapshot,  Event::kMigrate,       Event::kReplicate,   Event::kReplicateStop,
                           Event::kHandover,  Event::kUnfence,       Event::kPromote,     Event::kVerify,
                           Event::kDirtyRate, Event::kThrottle,      Event::kReleaseOutput, Event::kSetGeneration};

TEST(Lifecycle, NamesParseBack) {
  for (int i = 0; i < kPhaseCount; ++i) {
    auto p = static_cast<Phase>(i);
    EXPECT_EQ(ParsePhase(PhaseName(p)), p) << PhaseName(p);
  }
  for (int i = 0; i < kEventCount; ++i) {
    auto e = static_cast<Event>(i);
    EXPECT_EQ(ParseEvent(EventName(e)), e) << EventName(e);
  }
  EXPECT_FALSE(ParsePhase("Running"));
  EXPECT_FALSE(ParsePhase(""));
}

// Terminal phases have one way out, and no request takes it: a VM arriving (its source has
// stopped for good) at an incoming or standby host that a stop ended as it arrived.
TEST(Lifecycle, TableHasOneRowPerPairAndNoExitFromTerminalPhases) {
  size_t n = 0;
  const TransitionRow* rows = TransitionTable(&n);
  std::set<std::pair<int, int>> seen;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(seen.insert({int(rows[i].from), int(rows[i].event)}).second)
        << PhaseName(rows[i].from) << " + " << EventName(rows[i].event) << " twice";
    if (rows[i].from == Phase::kStopped && rows[i].event == Event::kArrived) continue;
    EXPECT_FALSE(IsTerminal(rows[i].from)) << PhaseName(rows[i].from) << " + " << EventName(rows[i].event);
  }
}

TEST(Lifecycle, AVmThatArrivesAsItsHostIsStoppedOrPromotedRunsThere) {
  for (Phase host : {Phase::kIncoming, Phase::kStandby}) {
    Lifecycle l(host);
    ASSERT_TRUE(l.Begin(Event::kStop).ok());
    EXPECT_EQ(l.phase(), Phase::kStopped);
    for (Event e : kRequests) EXPECT_FALSE(l.Begin(e).ok()) << EventName(e) << " admitted after a stop";
    ASSERT_TRUE(l.End(Event::kArrived).ok()) << "the only copy of the VM would run in phase stopped";
    EXPECT_EQ(l.phase(), Phase::kRunning);
  }
  Lifecycle s(Phase::kStandby);
  ASSERT_TRUE(s.Begin(Event::kPromote).ok());
  ASSERT_TRUE(s.End(Event::kArrived).ok()) << "a handover's VM arriving during a forced promotion";
  EXPECT_EQ(s.phase(), Phase::kRunning);
  EXPECT_FALSE(s.End(Event::kPromoteFailed).ok()) << "the failed promotion must not make it a standby again";
  EXPECT_EQ(s.phase(), Phase::kRunning);
}

// Found by the API fuzzer (its own check was wrong, not the table): under a fence every
// outcome lands in fenced, the arrival at a stopped host included (the fuzzer's path: a
// snapshot --stop fenced while it held the VM, then an arrival).
TEST(Lifecycle, AnArrivalUnderAFenceLandsFencedUntilUnfenced) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kSnapshot).ok());
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  ASSERT_TRUE(l.End(Event::kDoneStopped).ok());
  EXPECT_EQ(l.phase(), Phase::kStopped);
  ASSERT_TRUE(l.End(Event::kArrived).ok());
  EXPECT_EQ(l.phase(), Phase::kFenced) << "a fenced guest must not run";
  EXPECT_FALSE(l.Begin(Event::kResume).ok());
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
}

TEST(Lifecycle, ReplicationStaysHeldUntilItsReplicatorHasStopped) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kReplicate).ok());
  ASSERT_TRUE(l.Begin(Event::kReplicateStop).ok());
  EXPECT_EQ(l.phase(), Phase::kReplicating) << "a checkpoint may still be in flight";
  for (Event e : {Event::kPause, Event::kResume, Event::kMigrate, Event::kSnapshot, Event::kReplicate}) {
    EXPECT_FALSE(l.Begin(e).ok()) << EventName(e) << " admitted while the replicator stops";
  }
  ASSERT_TRUE(l.End(Event::kReplicationEnded).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
  // Fenced while it stops: still fenced after, and unfenced it runs unreplicated.
  ASSERT_TRUE(l.Begin(Event::kReplicate).ok());
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  ASSERT_TRUE(l.Begin(Event::kReplicateStop).ok());
  ASSERT_TRUE(l.End(Event::kReplicationEnded).ok());
  EXPECT_EQ(l.phase(), Phase::kFenced);
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
}

TEST(Lifecycle, ARefusedOrFailedHandoverGoesBackToReplicating) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kReplicate).ok());
  ASSERT_TRUE(l.Begin(Event::kHandover).ok());
  ASSERT_TRUE(l.End(Event::kDone).ok());
  EXPECT_EQ(l.phase(), Phase::kReplicating) << "the replicator still runs: pause and migrate must stay refused";
  EXPECT_FALSE(l.Begin(Event::kMigrate).ok());
  ASSERT_TRUE(l.Begin(Event::kHandover).ok());
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  ASSERT_TRUE(l.End(Event::kDone).ok());
  EXPECT_EQ(l.phase(), Phase::kFenced);
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kReplicating);
}

// Every request in every phase: obeyed exactly where the table has a row, refused with a
// message naming why everywhere else, and a refusal changes nothing.
TEST(Lifecycle, EveryRequestInEveryPhaseIsObeyedOrRefusedAsTheTableSays) {
  for (int i = 0; i < kPhaseCount; ++i) {
    const auto from = static_cast<Phase>(i);
    for (Event e : kRequests) {
      Lifecycle l(from);
      auto expected = Transition(from, e, Phase::kRunning);
      auto r = l.Begin(e);
      if (expected) {
        ASSERT_TRUE(r.ok()) << PhaseName(from) << " + " << EventName(e) << ": " << r.status().message();
        EXPECT_EQ(*r, from);
        if (!(from == Phase::kFenced && e == Event::kUnfence)) {
          EXPECT_EQ(l.phase(), *expected) << PhaseName(from);
        }
      } else {
        ASSERT_FALSE(r.ok()) << PhaseName(from) << " + " << EventName(e) << " was admitted";
        EXPECT_EQ(r.status().code(), ErrorCode::kRefused);
        EXPECT_NE(r.status().message().find("refused"), std::string::npos);
        EXPECT_EQ(l.phase(), from) << "a refusal moved " << PhaseName(from);
      }
    }
  }
}

TEST(Lifecycle, AMigrationHoldsTheVmAndTheSourceNeverRunsAfterCommit) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kMigrate).ok());
  for (Event e : kRequests) EXPECT_FALSE(l.Begin(e).ok()) << EventName(e) << " admitted during a migration";
  ASSERT_TRUE(l.End(Event::kCommitted).ok());
  EXPECT_EQ(l.phase(), Phase::kMigrated);
  for (Event e : kRequests) EXPECT_FALSE(l.Begin(e).ok()) << EventName(e) << " admitted after commit";
  l.Exited(Phase::kStopped);
  EXPECT_EQ(l.phase(), Phase::kMigrated);
}

TEST(Lifecycle, AFailedMigrationGoesBackToRunningAndAnUnansweredCommitNeedsForce) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kMigrate).ok());
  ASSERT_TRUE(l.End(Event::kDone).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kMigrate).ok());
  ASSERT_TRUE(l.End(Event::kCommitUnknown).ok());
  EXPECT_FALSE(l.Begin(Event::kResume).ok());
  EXPECT_TRUE(l.Begin(Event::kForceResume).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
}

TEST(Lifecycle, ASnapshotGoesBackToWhereItFoundTheVm) {
  Lifecycle l(Phase::kPaused);
  ASSERT_TRUE(l.Begin(Event::kSnapshot).ok());
  EXPECT_FALSE(l.Begin(Event::kSnapshot).ok()) << "two snapshots at once";
  EXPECT_FALSE(l.Begin(Event::kResume).ok());
  ASSERT_TRUE(l.End(Event::kDone).ok());
  EXPECT_EQ(l.phase(), Phase::kPaused);
  ASSERT_TRUE(l.Begin(Event::kResume).ok());
  ASSERT_TRUE(l.Begin(Event::kSnapshot).ok());
  ASSERT_TRUE(l.End(Event::kDoneStopped).ok());
  EXPECT_EQ(l.phase(), Phase::kStopped);
}

TEST(Lifecycle, FenceIsAStateThatResumeCannotLeave) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  EXPECT_EQ(l.phase(), Phase::kFenced);
  EXPECT_TRUE(l.fenced());
  EXPECT_FALSE(l.Begin(Event::kResume).ok());
  EXPECT_FALSE(l.Begin(Event::kForceResume).ok());
  EXPECT_FALSE(l.Begin(Event::kMigrate).ok());
  EXPECT_TRUE(l.Begin(Event::kFence).ok()) << "fencing twice";
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
  EXPECT_FALSE(l.fenced());
}

TEST(Lifecycle, AFenceDuringAnOperationLandsWhenItEnds) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kSnapshot).ok());
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  EXPECT_EQ(l.phase(), Phase::kSnapshotting);
  ASSERT_TRUE(l.End(Event::kDone).ok());
  EXPECT_EQ(l.phase(), Phase::kFenced);
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
}

TEST(Lifecycle, AFencedReplicaReturnsToRunningIfItsReplicationEndedMeanwhile) {
  Lifecycle l(Phase::kRunning);
  ASSERT_TRUE(l.Begin(Event::kReplicate).ok());
  ASSERT_TRUE(l.Begin(Event::kFence).ok());
  ASSERT_TRUE(l.End(Event::kReplicationEnded).ok());
  ASSERT_TRUE(l.Begin(Event::kUnfence).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
  Lifecycle k(Phase::kRunning);
  ASSERT_TRUE(k.Begin(Event::kReplicate).ok());
  ASSERT_TRUE(k.Begin(Event::kFence).ok());
  ASSERT_TRUE(k.Begin(Event::kUnfence).ok());
  EXPECT_EQ(k.phase(), Phase::kReplicating);
}

TEST(Lifecycle, OutcomesThatDoNotApplyAreRefused) {
  Lifecycle l(Phase::kRunning);
  EXPECT_FALSE(l.End(Event::kCommitted).ok());
  EXPECT_EQ(l.phase(), Phase::kRunning);
  Lifecycle s(Phase::kStandby);
  EXPECT_FALSE(s.Begin(Event::kFence).ok());
  ASSERT_TRUE(s.Begin(Event::kPromote).ok());
  EXPECT_FALSE(s.Begin(Event::kPromote).ok()) << "two promotions at once";
  ASSERT_TRUE(s.End(Event::kPromoteFailed).ok());
  EXPECT_EQ(s.phase(), Phase::kStandby);
}

}  // namespace
}  // namespace ferry::vmhost
