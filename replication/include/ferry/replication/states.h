// The states of a replication, on both ends, as types: the primary's ReplicationState and the
// standby's StandbyState, each with one name/parse pair for the JSON edge (a VMM's status,
// the HA agents' reports). ha-manager decides on these values, never on strings.
// Pure values; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ferry::replication {

enum class ReplicationState : uint8_t {
  kConnecting,             // connecting to the standby and authenticating
  kSyncing,                // the initial sync (a live migration into the standby)
  kProtected,              // checkpoints are being acknowledged
  kFailed,                 // the standby was lost; output may be held (output_held)
  kStopped,                // ended on request
  kHandedOver,             // a handover ran the replica: this guest never runs again
  kHandoverIndeterminate,  // the standby's answer to the handover was lost
};

enum class StandbyState : uint8_t {
  kWaiting,      // listening for a primary
  kSyncing,      // receiving the initial sync
  kReplicating,  // receiving checkpoints
  kPrimaryLost,  // the primary went silent or broke off: may be promoted if it committed
  kEnded,        // the primary ended replication on purpose
  kPromoted,     // the replica runs
  kCancelled,    // stopped on request
};

const char* ReplicationStateName(ReplicationState s);
std::optional<ReplicationState> ParseReplicationState(std::string_view name);
const char* StandbyStateName(StandbyState s);
std::optional<StandbyState> ParseStandbyState(std::string_view name);

// A primary whose replication is under way or holding (a new one must not be started).
inline bool ReplicationActive(ReplicationState s) {
  return s == ReplicationState::kConnecting || s == ReplicationState::kSyncing || s == ReplicationState::kProtected;
}
// A standby that still receives, or may: it belongs to its primary.
inline bool StandbyReceiving(StandbyState s) {
  return s == StandbyState::kWaiting || s == StandbyState::kSyncing || s == StandbyState::kReplicating;
}

}  // namespace ferry::replication
