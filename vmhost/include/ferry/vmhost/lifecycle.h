// The VM lifecycle: one state machine per VM host process, as a table.
//
// Every request that needs the VM or changes what it may do is an Event. Transition(phase,
// event) looks the pair up in one table (kTransitions, lifecycle.cc; vmhost/LIFECYCLE.md shows
// it): a pair that is not in the table is refused. Operations that hold the VM (snapshot,
// migration, handover, promotion, replication's checkpoints) move it to a phase of their own
// while they run, so an operator's pause, resume or stop, or a second operation, finds that
// phase and is refused. A migrated or handed-over source reaches a terminal phase: nothing
// leaves it, so a source never runs again once the destination has it.
//
// Lifecycle (the object) holds the current phase under a mutex; Begin() admits an event or
// refuses it with a clear error; End() records the outcome of an operation that Begin()
// started. Thread-safe: API handlers on any thread call it.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/base/status.h"

namespace ferry::vmhost {

enum class Phase : uint8_t {
  kIncoming,        // `ferry incoming`: no VM yet; a migration may bring one
  kStandby,         // `ferry standby`: holds a replica; no VM runs here
  kPromoting,       // the replica is being started here
  kBooting,         // the VM exists and has not run yet
  kRunning,
  kPaused,          // by the operator
  kFenced,          // by the HA agent: paused, and resume is refused until unfence
  kSnapshotting,    // a snapshot holds the VM
  kMeasuring,       // a dirty-rate measurement holds the VM's dirty log
  kMigrating,       // a migration holds the VM (pre-copy rounds, stop-and-copy, commit)
  kCommitUnknown,   // a migration's or handover's commit went unanswered: paused; resume
                    // only with force, once the operator knows the other end does not run it
  kReplicating,     // running, protected by a standby; checkpoints hold it briefly
  kHandingOver,     // the final checkpoint and the standby's start hold the VM
  kMigrated,        // terminal: the destination runs the VM
  kHandedOver,      // terminal: the standby runs the VM
  kStopped,         // terminal
  kShutdown,        // terminal: the guest shut down
  kCrashed,         // terminal
};
inline constexpr int kPhaseCount = static_cast<int>(Phase::kCrashed) + 1;

enum class Event : uint8_t {
  // Requests (an operator's, the HA agent's).
  kPause, kResume, kForceResume, kStop, kSnapshot, kMigrate, kReplicate, kReplicateStop, kHandover,
  kFence, kUnfence, kPromote, kVerify, kDirtyRate, kThrottle, kReleaseOutput, kSetGeneration,
  kStatus,
  kLease,  // the HA agent's watchdog lease: admitted in every phase, changes none
  // Outcomes, reported by the code that runs an operation or watches the VM.
  kArrived,        // incoming: the migrated VM runs here
  kStarted,        // a booted VM's vCPUs run
  kDone,           // the operation ended; the VM is as it was before (snapshot, failed migration)
  kDoneStopped,    // a snapshot with --stop: written, VM stopped
  kCommitted,      // the destination / standby runs the VM
  kCommitUnknown,  // the commit's answer was lost
  kReplicationEnded,  // the replicator stopped or failed; the VM runs on unprotected
  kPromoted,       // the replica runs here
  kPromoteFailed,  // back to standby
  kGuestShutdown, kGuestCrashed, kVmStopped,
};
inline constexpr int kEventCount = static_cast<int>(Event::kVmStopped) + 1;

// One name per value at the JSON edge, and its parse.
const char* PhaseName(Phase p);
std::optional<Phase> ParsePhase(std::string_view name);
const char* EventName(Event e);
std::optional<Event> ParseEvent(std::string_view name);
bool IsTerminal(Phase p);
// The guest executes in this phase (running, replicating; a checkpoint's pause is brief).
bool GuestRuns(Phase p);

// The table: where `event` takes a VM in `from`, or nullopt if the table refuses it. An
// outcome that returns the VM to where it was (kDone after a snapshot of a paused VM) needs
// `before`: the phase the operation began in.
std::optional<Phase> Transition(Phase from, Event event, Phase before = Phase::kRunning);
// Why the table refuses `event` in `from`, in words for the operator.
std::string RefusalReason(Phase from, Event event);

// One row of the table, for docs and tests.
struct TransitionRow {
  Phase from;
  Event event;
  Phase to;          // ignored when `back` is set
  bool back = false; // to the phase the operation began in
};
const TransitionRow* TransitionTable(size_t* count);
// The table as a Markdown table (vmhost/LIFECYCLE.md holds it; a test keeps them equal).
std::string TransitionTableMarkdown();

// Fencing (the HA agent's) is more than a row: it must win in every phase where a VM could
// run, including while an operation holds it. So kFence is admitted in every phase with a VM
// that is not terminal. In running, paused and replicating it moves to kFenced (unfence goes
// back); while an operation holds the VM the phase stays and a fence flag is set, and the
// operation's kDone then lands in kFenced instead of going back. The VM host seals the VM
// (hypervisor::Vm::Seal) at the same time, so nothing resumes it meanwhile.
class Lifecycle {
 public:
  explicit Lifecycle(Phase initial) : phase_(initial) {}

  Phase phase() const;
  bool fenced() const;
  // Admits `event` in the current phase and moves to its target, or refuses: kRefused with a
  // message that names the phase ("a migration holds this VM"). Returns the phase it left.
  Result<Phase> Begin(Event event);
  // Records an outcome (kDone, kCommitted, kReplicationEnded, ...) in the current phase. An
  // outcome the table does not allow is refused (and changes nothing).
  Status End(Event outcome);
  // Undoes a Begin() whose action failed: back to `from` if still in `to`.
  void Revert(Phase from, Phase to);
  // Sets a terminal phase from the VM's own exit (shutdown, crash, stop). A migrated or
  // handed-over VM keeps that phase.
  void Exited(Phase terminal);

 private:
  mutable std::mutex mu_;  // guards the three below
  Phase phase_;
  Phase before_ = Phase::kRunning;  // where a holding operation (or a fence) began
  bool fenced_ = false;
};

}  // namespace ferry::vmhost
