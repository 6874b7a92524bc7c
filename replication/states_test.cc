#include "ferry/replication/states.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::replication {
namespace {

TEST(ReplicationStates, EveryNameParsesBackToItsStateAndNothingElseParses) {
  for (int i = 0; i <= static_cast<int>(ReplicationState::kHandoverIndeterminate); ++i) {
    auto s = static_cast<ReplicationState>(i);
    EXPECT_EQ(ParseReplicationState(ReplicationStateName(s)), s);
  }
  for (int i = 0; i <= static_cast<int>(StandbyState::kCancelled); ++i) {
    auto s = static_cast<StandbyState>(i);
    EXPECT_EQ(ParseStandbyState(StandbyStateName(s)), s);
  }
  EXPECT_EQ(ParseReplicationState("Protected"), std::nullopt);
  EXPECT_EQ(ParseReplicationState(""), std::nullopt);
  EXPECT_EQ(ParseStandbyState("primary_lost"), std::nullopt);
  EXPECT_EQ(ParseStandbyState(std::string("waiting\0", 8)), std::nullopt);
}

TEST(ReplicationStates, OnlyConnectingSyncingAndProtectedAreActive) {
  EXPECT_TRUE(ReplicationActive(ReplicationState::kConnecting));
  EXPECT_TRUE(ReplicationActive(ReplicationState::kSyncing));
  EXPECT_TRUE(ReplicationActive(ReplicationState::kProtected));
  EXPECT_FALSE(ReplicationActive(ReplicationState::kFailed));
  EXPECT_FALSE(ReplicationActive(ReplicationState::kStopped));
  EXPECT_FALSE(ReplicationActive(ReplicationState::kHandedOver));
  EXPECT_TRUE(StandbyReceiving(StandbyState::kWaiting));
  EXPECT_FALSE(StandbyReceiving(StandbyState::kPrimaryLost));
}

}  // namespace
}  // namespace ferry::replication
