#include "ferry/vmhost/lifecycle.h"

#include <array>

namespace ferry::vmhost {
namespace {

using P = Phase;
using E = Event;

constexpr std::array<const char*, kPhaseCount> kPhaseNames = {
    "incoming", "standby",  "promoting", "booting",     "running",    "paused",   "fenced",  "snapshotting", "measuring",
    "migrating", "commit-unknown", "replicating", "handing-over", "migrated", "handed-over", "stopped",
    "shutdown", "crashed"};

constexpr std::array<const char*, kEventCount> kEventNames = {
    "pause", "resume", "force-resume", "stop", "snapshot", "migrate", "replicate", "replicate_stop", "handover",
    "fence", "unfence", "promote", "verify", "dirty_rate", "throttle", "release_output", "set_generation", "status",
    "lease", "arrived", "started", "done", "done-stopped", "committed", "commit-unknown", "replication-ended", "promoted",
    "promote-failed", "guest-shutdown", "guest-crashed", "vm-stopped"};

// The lifecycle. A (phase, event) pair that is not here is refused. Status and lease are
// admitted in every phase and fence as the header says; none is listed.
constexpr TransitionRow kRows[] = {
    // Before a VM exists.
    {P::kIncoming, E::kArrived, P::kRunning},
    {P::kIncoming, E::kStop, P::kStopped},
    {P::kStandby, E::kPromote, P::kPromoting},
    {P::kStandby, E::kArrived, P::kRunning},  // the primary handed the VM over
    {P::kStandby, E::kStop, P::kStopped},
    {P::kPromoting, E::kPromoted, P::kRunning},
    {P::kPromoting, E::kPromoteFailed, P::kStandby},
    {P::kPromoting, E::kArrived, P::kRunning},  // the primary's handover won the race: it runs here
    // A stop that came as the VM arrived: its source has stopped for good, so it runs here.
    {P::kStopped, E::kArrived, P::kRunning},
    {P::kBooting, E::kStarted, P::kRunning},
    {P::kBooting, E::kSetGeneration, P::kBooting},
    {P::kBooting, E::kStop, P::kBooting},
    // Running: everything an operator may do.
    {P::kRunning, E::kPause, P::kPaused},
    {P::kRunning, E::kResume, P::kRunning},
    {P::kRunning, E::kForceResume, P::kRunning},
    {P::kRunning, E::kStop, P::kRunning},  // the guest is asked; its exit ends the VM
    {P::kRunning, E::kSnapshot, P::kSnapshotting},
    {P::kRunning, E::kMigrate, P::kMigrating},
    {P::kRunning, E::kReplicate, P::kReplicating},
    {P::kRunning, E::kUnfence, P::kRunning},
    {P::kRunning, E::kVerify, P::kRunning},
    {P::kRunning, E::kDirtyRate, P::kMeasuring},
    {P::kRunning, E::kThrottle, P::kRunning},
    {P::kRunning, E::kReleaseOutput, P::kRunning},
    {P::kRunning, E::kSetGeneration, P::kRunning},
    // Paused by the operator.
    {P::kPaused, E::kPause, P::kPaused},
    {P::kPaused, E::kResume, P::kRunning},
    {P::kPaused, E::kForceResume, P::kRunning},
    {P::kPaused, E::kStop, P::kPaused},
    {P::kPaused, E::kSnapshot, P::kSnapshotting},
    {P::kPaused, E::kUnfence, P::kPaused},
    {P::kPaused, E::kThrottle, P::kPaused},
    {P::kPaused, E::kReleaseOutput, P::kPaused},
    {P::kPaused, E::kSetGeneration, P::kPaused},
    // Fenced by the HA agent.
    {P::kFenced, E::kUnfence, P::kRunning, true},
    {P::kFenced, E::kStop, P::kFenced},
    {P::kFenced, E::kReplicateStop, P::kFenced},
    {P::kFenced, E::kReleaseOutput, P::kFenced},
    {P::kFenced, E::kSetGeneration, P::kFenced},
    {P::kFenced, E::kDone, P::kFenced},              // an operation that held the VM ended
    {P::kFenced, E::kReplicationEnded, P::kFenced},
    // Held by an operation: only its outcome moves it.
    {P::kSnapshotting, E::kDone, P::kRunning, true},
    {P::kSnapshotting, E::kDoneStopped, P::kStopped},
    {P::kMeasuring, E::kDone, P::kRunning, true},
    {P::kMigrating, E::kDone, P::kRunning, true},
    {P::kMigrating, E::kCommitted, P::kMigrated},
    {P::kMigrating, E::kCommitUnknown, P::kCommitUnknown},
    {P::kCommitUnknown, E::kForceResume, P::kRunning},
    {P::kIncoming, E::kCommitUnknown, P::kCommitUnknown},  // post-copy: every page here, the source's end lost
    {P::kCommitUnknown, E::kStop, P::kCommitUnknown},
    // Replicating: checkpoints hold the VM, so the operator's pause, resume, snapshot and
    // throttle are refused; a migration would race the replicator for the dirty log.
    {P::kReplicating, E::kStop, P::kReplicating},
    {P::kReplicating, E::kReplicateStop, P::kReplicating},  // until the replicator has stopped
    {P::kReplicating, E::kReplicationEnded, P::kRunning},
    {P::kReplicating, E::kHandover, P::kHandingOver},
    {P::kReplicating, E::kVerify, P::kReplicating},
    {P::kReplicating, E::kUnfence, P::kReplicating},
    {P::kReplicating, E::kSetGeneration, P::kReplicating},
    {P::kHandingOver, E::kCommitted, P::kHandedOver},
    {P::kHandingOver, E::kDone, P::kReplicating, true},  // refused or failed before the standby was told
    {P::kHandingOver, E::kCommitUnknown, P::kCommitUnknown},
    {P::kHandingOver, E::kReplicationEnded, P::kHandingOver},
};

bool HasVm(Phase p) { return p != P::kIncoming && p != P::kStandby && p != P::kPromoting; }

// Phases where an operation holds the VM: a fence waits for its outcome.
bool Held(Phase p) {
  return p == P::kSnapshotting || p == P::kMeasuring || p == P::kMigrating || p == P::kHandingOver || p == P::kCommitUnknown ||
         p == P::kBooting;
}

const TransitionRow* Find(Phase from, Event event) {
  for (const auto& r : kRows) {
    if (r.from == from && r.event == event) return &r;
  }
  return nullptr;
}

}  // namespace

// A value outside the enum (never made here) names itself "unknown" rather than read past
// the table; GCC 12 also warned (-Warray-bounds) on RefusalReason's last line without it.
const char* PhaseName(Phase p) {
  const auto i = static_cast<size_t>(p);
  return i < kPhaseNames.size() ? kPhaseNames[i] : "unknown";
}
const char* EventName(Event e) {
  const auto i = static_cast<size_t>(e);
  return i < kEventNames.size() ? kEventNames[i] : "unknown";
}

std::optional<Phase> ParsePhase(std::string_view name) {
  for (size_t i = 0; i < kPhaseNames.size(); ++i) {
    if (name == kPhaseNames[i]) return static_cast<Phase>(i);
  }
  return std::nullopt;
}

std::optional<Event> ParseEvent(std::string_view name) {
  for (size_t i = 0; i < kEventNames.size(); ++i) {
    if (name == kEventNames[i]) return static_cast<Event>(i);
  }
  return std::nullopt;
}

bool IsTerminal(Phase p) {
  return p == P::kMigrated || p == P::kHandedOver || p == P::kStopped || p == P::kShutdown || p == P::kCrashed;
}

bool GuestRuns(Phase p) { return p == P::kRunning || p == P::kReplicating; }

const TransitionRow* TransitionTable(size_t* count) {
  *count = sizeof kRows / sizeof kRows[0];
  return kRows;
}

std::string TransitionTableMarkdown() {
  std::string out = "| from | event | to |\n|---|---|---|\n";
  for (const auto& r : kRows) {
    out += std::string("| ") + PhaseName(r.from) + " | " + EventName(r.event) + " | " +
           (r.back ? "(where it was)" : PhaseName(r.to)) + " |\n";
  }
  return out;
}

std::optional<Phase> Transition(Phase from, Event event, Phase before) {
  if (event == E::kStatus || event == E::kLease) return from;
  const TransitionRow* r = Find(from, event);
  if (!r) return std::nullopt;
  return r->back ? before : r->to;
}

std::string RefusalReason(Phase from, Event event) {
  std::string what = std::string(EventName(event)) + " is refused: ";
  switch (from) {
    case P::kIncoming: return what + "no VM runs here yet (waiting for a migration)";
    case P::kStandby: return what + "this is a standby: no VM runs here until it is promoted";
    case P::kPromoting: return what + "the replica is being promoted";
    case P::kBooting: return what + "the VM is still booting";
    case P::kFenced: return what + "the VM is fenced by the HA manager (unfence first)";
    case P::kSnapshotting: return what + "a snapshot holds this VM";
    case P::kMeasuring: return what + "a dirty-rate measurement holds this VM";
    case P::kMigrating: return what + "a migration holds this VM";
    case P::kCommitUnknown:
      return what + "a commit to the other host went unanswered; check it does not run the VM, then resume with force";
    case P::kReplicating: return what + "this VM is being replicated (stop replication first)";
    case P::kHandingOver: return what + "a handover to the standby holds this VM";
    case P::kMigrated: return what + "this VM was migrated: it runs on the destination now";
    case P::kHandedOver: return what + "this VM was handed over: it runs on the standby now";
    case P::kRunning:
      if (event == E::kReplicateStop) return what + "this VM is not being replicated";
      if (event == E::kHandover) return what + "this VM is not being replicated: there is no standby to hand it to";
      if (event == E::kPromote) return what + "this VM already runs here";
      return what + "the VM is running";
    case P::kPaused:
      if (event == E::kVerify || event == E::kDirtyRate) return what + "the VM is paused (it needs a running guest)";
      if (event == E::kMigrate || event == E::kReplicate) return what + "the VM is paused (resume it first)";
      return what + "the VM is paused";
    case P::kStopped:
    case P::kShutdown:
    case P::kCrashed: return what + "the VM has ended (" + PhaseName(from) + ")";
  }
  return what + "not in phase " + PhaseName(from);
}

Phase Lifecycle::phase() const {
  std::lock_guard lock(mu_);
  return phase_;
}

bool Lifecycle::fenced() const {
  std::lock_guard lock(mu_);
  return fenced_;
}

Result<Phase> Lifecycle::Begin(Event event) {
  std::lock_guard lock(mu_);
  const Phase from = phase_;
  if (event == E::kStatus || event == E::kLease) return from;
  if (event == E::kFence) {
    if (!HasVm(from) || IsTerminal(from)) return Refused(RefusalReason(from, event));
    if (from == P::kFenced) return from;  // twice: still fenced
    fenced_ = true;
    if (!Held(from)) {
      before_ = from;
      phase_ = P::kFenced;
    }
    return from;
  }
  if (event == E::kUnfence && fenced_ && Held(from)) {
    fenced_ = false;  // the operation's outcome goes back as if no fence had come
    return from;
  }
  if (fenced_ && (event == E::kResume || event == E::kForceResume)) return Refused(RefusalReason(P::kFenced, event));
  const TransitionRow* r = Find(from, event);
  if (!r) return Refused(RefusalReason(from, event));
  if (Held(r->to) || r->to == P::kPromoting) before_ = from;
  if (event == E::kUnfence) fenced_ = false;
  phase_ = r->back ? before_ : r->to;
  return from;
}

Status Lifecycle::End(Event outcome) {
  std::lock_guard lock(mu_);
  const Phase from = phase_;
  if (from == P::kFenced && outcome == E::kReplicationEnded && before_ == P::kReplicating) before_ = P::kRunning;
  const TransitionRow* r = Find(from, outcome);
  if (!r) return Refused(std::string("outcome ") + EventName(outcome) + " does not apply in phase " + PhaseName(from));
  Phase to = r->back ? before_ : r->to;
  // A fence that came while the operation held the VM takes effect now.
  if (fenced_ && !IsTerminal(to) && to != P::kCommitUnknown && from != P::kFenced) {
    if (to == P::kRunning || to == P::kPaused || to == P::kReplicating) before_ = to;
    to = P::kFenced;
  }
  phase_ = to;
  return Status::Ok();
}

void Lifecycle::Revert(Phase from, Phase to) {
  std::lock_guard lock(mu_);
  if (phase_ == to) phase_ = from;
}

void Lifecycle::Exited(Phase terminal) {
  std::lock_guard lock(mu_);
  if (phase_ == P::kMigrated || phase_ == P::kHandedOver) return;
  phase_ = terminal;
}

}  // namespace ferry::vmhost
