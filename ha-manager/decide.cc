// Decide(): one agent's next steps for every protected VM (cluster_state.h explains the
// protocol), as rules. For each VM, the rules of the case it is in (this host owns it, holds
// its standby, or neither) are tried in order; the first that applies decides, with an
// action or with a deliberate "nothing now". Every rule is idempotent: it reads the state
// and the agent's bookkeeping, never its own past output, and the agent marks a VM busy while
// it carries out an action.
#include <algorithm>
#include <array>
#include <optional>
#include <set>

#include "ferry/ha/cluster_state.h"

namespace ferry::ha {
namespace {

using replication::ReplicationState;
using replication::StandbyState;

// What one VM looks like to this agent now.
struct Ctx {
  const ClusterConfig& config;
  const ClusterState& state;
  const std::string& self;
  const VmSpec& v;
  const Claim* c;            // the agreed owner, if any
  uint64_t G;                // its generation (0 if unclaimed)
  const Instance* mine;      // this host's instance of the VM, if any
  bool claim_pending;        // this agent's claim is on its way
};

// A rule's verdict: it does not apply (the next rule is tried), or it applies, with an
// action or without one.
struct Verdict {
  bool applies = false;
  std::optional<Action> action;
};
Verdict Pass() { return {}; }
Verdict Wait() { return {true, std::nullopt}; }
Verdict Do(Action::Kind k, const Ctx& x, const std::string& host, uint64_t generation, std::string why) {
  return {true, Action{k, x.v.name, host, generation, std::move(why)}};
}

struct Rule {
  const char* name;  // what it is for, in the order it is tried
  Verdict (*fn)(const Ctx&);
};

// Where vm's standby should be: its preferred hosts first (the configured primary and backup,
// so a failed-over VM goes back to being protected by its old home once that returns), then
// the rest in config order; never the owner, a host out of the view, or one being evacuated.
std::vector<std::string> BackupCandidates(const Ctx& x) {
  std::vector<std::string> order;
  // A VM being moved is protected by its destination first: the move is a handover to it.
  const std::string* moving_to = x.state.move(x.v.name);
  if (moving_to) order.push_back(*moving_to);
  auto add = [&order](const std::string& h) {
    if (!h.empty() && std::find(order.begin(), order.end(), h) == order.end()) order.push_back(h);
  };
  add(x.v.primary);
  add(x.v.backup);
  for (const auto& h : x.config.hosts) add(h.name);
  std::vector<std::string> out;
  for (const auto& h : order) {
    if (h != x.self && x.state.live(h) && !x.state.evacuating(h)) out.push_back(h);
  }
  // A host that failed this VM's standby lately is tried last, unless a move names it: the
  // operator (or the balancer) asked for that host, and the move could not begin without it.
  auto avoid = x.state.protect_avoid.find(x.v.name);
  if (avoid != x.state.protect_avoid.end() && x.state.now_ms < avoid->second.second &&
      !(moving_to && *moving_to == avoid->second.first)) {
    auto it = std::find(out.begin(), out.end(), avoid->second.first);
    if (it != out.end()) std::rotate(it, it + 1, out.end());  // last, not gone: it may be the only one
  }
  return out;
}

// The host that boots a never-started VM: its preferred primary, else its backup, else the
// first host in config order, among those in the view and not evacuating.
std::string StartHost(const Ctx& x) {
  std::vector<std::string> order = {x.v.primary};
  if (!x.v.backup.empty()) order.push_back(x.v.backup);
  for (const auto& h : x.config.hosts) order.push_back(h.name);
  for (const auto& h : order) {
    if (x.state.live(h) && !x.state.evacuating(h)) return h;
  }
  return "";
}

// Is the owner's primary of vm still there: its host in the view and its report listing it.
bool OwnerAlive(const Ctx& x) {
  if (!x.state.live(x.c->host)) return false;
  const Instance* i = x.state.instance(x.c->host, x.v.name);
  return i && i->primary();
}

// --- Rules that come first, wherever the VM is ---

// The owner's own claim of the next generation, made to disown a lost standby's replica
// (OwnerReleasesHeldOutput): its VMM takes that generation and only then lets the held output
// go. Before the stale-primary rule, which would otherwise kill it for being one behind.
bool UnprotectedClaimOfMine(const Ctx& x) {
  return x.mine && x.mine->primary() && x.c && x.c->host == x.self && x.c->why == "unprotected" &&
         x.mine->generation + 1 == x.G;
}

// The VM handed back to this primary (OwnerHandsBackAStandbyItLost), agreed: its VMM takes
// the claim's generation and lets its held output go (unfenced by the owner's rules next).
bool ReclaimOfMine(const Ctx& x) {
  return x.mine && x.mine->primary() && x.c && x.c->host == x.self && x.c->why == "reclaim" && x.mine->generation < x.G;
}

Verdict OwnerTakesItsUnprotectedClaim(const Ctx& x) {
  if (UnprotectedClaimOfMine(x)) {
    return Do(Action::kReleaseOutput, x, x.self, x.G, "standby lost while quorate, its replica disowned");
  }
  if (ReclaimOfMine(x)) return Do(Action::kReleaseOutput, x, x.self, x.G, "handed back: the failover's standby was lost");
  return Pass();
}

// The claimed owner runs the claim's generation: its report lists a primary of it (or newer).
bool ClaimedOwnerRunsIt(const Ctx& x) {
  return OwnerAlive(x) && x.state.instance(x.c->host, x.v.name)->generation >= x.G;
}

// A primary of an older generation, or of the claim's generation on another host, is stale.
// It goes once the claimed owner runs the VM. Until then it stays (fenced, or its output
// held, as a stale primary is: only the owner's rules unfence or release): it may be the only
// copy left, if the new owner's standby dies before its promotion (OwnerHandsBackAStandbyItLost).
Verdict StaleLocalPrimary(const Ctx& x) {
  if (!x.mine || !x.mine->primary() || !x.c) return Pass();
  if (x.mine->generation < x.G || (x.mine->generation == x.G && x.c->host != x.self)) {
    if (!ClaimedOwnerRunsIt(x)) return Wait();
    return Do(Action::kKill, x, x.self, x.mine->generation,
              "stale: generation " + std::to_string(x.G) + " runs on " + x.c->host);
  }
  return Pass();
}

Verdict HandoverMadeThisThePrimary(const Ctx& x) {
  if (!x.mine || !x.mine->primary() || x.mine->generation <= x.G) return Pass();
  if (x.claim_pending) return Wait();
  return Do(Action::kClaim, x, x.self, x.mine->generation, "handover");
}

Verdict NeverStarted(const Ctx& x) {
  if (x.c) return Pass();
  const bool everyone = std::all_of(x.config.hosts.begin(), x.config.hosts.end(),
                                    [&](const HostConfig& h) { return x.state.live(h.name); });
  if ((everyone || x.state.startup_grace_over) && StartHost(x) == x.self && !x.claim_pending) {
    return Do(Action::kClaim, x, x.self, 1, "start");
  }
  return Wait();
}

// --- Rules for the owner (the claim names this host) ---

// This agent claimed a failover onto its standby, and the standby is gone before any
// promotion was asked of it here: the claim's generation never ran (a standby serves only
// once promoted, and only this agent promotes it; an agent restarted since knows no such
// claim of its own and waits). The primary that standby protected, the previous generation's,
// still holds every acknowledged write (its output waited for this standby's acknowledgements):
// if its host is here, the VM is handed back to it at the next generation, rather than left
// running nowhere. Found by AgentSimDrills (seed 1595, with a lease): the standby killed
// right after its host claimed, the old primary back in the view, and the VM ran nowhere for good.
Verdict OwnerHandsBackAStandbyItLost(const Ctx& x) {
  if (x.c->why != "failover") return Pass();
  auto made = x.state.claimed_here.find(x.v.name);
  auto l = x.state.launched.find(x.v.name);
  if (made == x.state.claimed_here.end() || made->second != x.G || (l != x.state.launched.end() && l->second >= x.G)) {
    return Pass();
  }
  if (x.claim_pending) return Wait();
  for (const auto& h : x.config.hosts) {
    const Instance* i = x.state.instance(h.name, x.v.name);
    if (h.name != x.self && x.state.live(h.name) && i && i->primary() && i->generation + 1 == x.G) {
      return Do(Action::kClaim, x, h.name, x.G + 1, "reclaim");
    }
  }
  return Wait();
}

Verdict OwnerBootsWhatItClaimed(const Ctx& x) {
  auto l = x.state.launched.find(x.v.name);
  if (x.c->why == "start" && (l == x.state.launched.end() || l->second < x.G)) {
    return Do(Action::kStartPrimary, x, x.self, x.G, "claimed");
  }
  return Wait();
}

Verdict OwnerPromotesItsStandby(const Ctx& x) {
  if (!x.mine->standby()) return Pass();
  // A failover claim, seen agreed or learned from the others' reports (they carry its reason:
  // this agent may have restarted between its claim and the promotion).
  if (x.c->why == "failover" && x.mine->committed > 0) return Do(Action::kPromote, x, x.self, x.G, "failover");
  return Wait();
}

Verdict OwnerUnfences(const Ctx& x) {
  if (!x.mine->fenced) return Pass();
  return Do(Action::kUnfence, x, x.self, x.G, "quorum regained, still the owner");
}

Verdict OwnerWaitsForARunningGuest(const Ctx& x) { return x.mine->Runs() ? Pass() : Wait(); }

// Output is held but nothing will release it: the standby was lost, or a switch to a new one
// failed, while this partition is quorate. The old standby may still hold a replica that the
// output would outrun: were this host to leave the view after the release, that standby's host
// would promote it and clients would see acknowledged state go back (measured on a test
// cluster: 12-20 stale reads per cut of the replication path). So the owner first claims the
// VM at the next generation. Claims are agreed through the group, and a member that stays in
// the view delivers it before any view change, so once it is back here no host can promote a
// replica of the older generation (StandbyTakesOverAGoneOwner wants the claim's generation;
// StandbyEndsWhenNoLongerUsed ends it). Then OwnerTakesItsUnprotectedClaim raises the VMM's
// generation and lets the output go, and the VM is re-protected at the new one (rules below).
Verdict OwnerReleasesHeldOutput(const Ctx& x) {
  if (x.mine->Replicating() || !x.mine->output_held) return Pass();
  if (x.state.output_released.count(x.v.name)) return Pass();  // asked once already
  if (x.claim_pending) return Wait();
  return Do(Action::kClaim, x, x.self, x.G + 1, "unprotected");
}

// Evacuation and moves both end in a handover to a standby that is in sync.
Verdict OwnerHandsOver(const Ctx& x) {
  const std::string* move_to = x.state.move(x.v.name);
  const std::string& standby = x.mine->standby_host;
  const bool wanted = x.state.evacuating(x.self) || (move_to && *move_to == standby);
  if (!wanted || !x.mine->ReplicationIs(ReplicationState::kProtected) || !x.state.live(standby) ||
      x.state.evacuating(standby)) {
    return Pass();
  }
  return Do(Action::kHandover, x, standby, x.G + 1,
            x.state.evacuating(x.self) ? "evacuating " + x.self : "move to " + standby);
}

// Whether the last protect request every member holds names `target` at this generation.
// A failover with two replicas about goes to the host it names (StandbyTakesOverAGoneOwner),
// so replication to a standby starts only once it is announced. A standby can be waiting
// without it: one a host started on a protect request it still held from before it left the
// view, while the owner asked another host meanwhile. Found by AgentSimDrills: a switch to
// such a standby, the owner's host killed mid-move, and the old standby, named by the last
// request everyone held, won the failover over the new one (5 acknowledged writes lost).
bool Announced(const Ctx& x, const std::string& target) {
  auto p = x.state.protect(x.v.name);
  return p && p->first == target && p->second == x.G;
}

// The last steps of protecting vm on `target`, for a first protection and a switch alike: ask
// the host for a standby (a protect request, not again while the last one this agent sent
// names it), and once its standby waits at this generation and is announced, `start` it
// (replicate, or switch to it). A waiting standby not yet announced is asked for again.
Verdict ProtectOn(const Ctx& x, const std::string& target, Action::Kind start, const std::string& ready_why,
                  const std::string& ask_why) {
  const Instance* sb = x.state.instance(target, x.v.name);
  const bool waiting = sb && sb->StandbyIs(StandbyState::kWaiting) && sb->generation == x.G;
  if (waiting && Announced(x, target)) return Do(start, x, target, x.G, ready_why);
  if (sb && !waiting) return Wait();
  auto sent = x.state.protect_sent.find(x.v.name);
  if (sent != x.state.protect_sent.end() && sent->second == target) return Wait();  // on its way
  return Do(Action::kProtect, x, target, x.G, waiting ? ready_why + " (announced)" : ask_why);
}

// Replicating: keep it, stop it if the standby's host left, or move the standby where it
// should be (a move's target, or back to a preferred host) make-before-break: the new standby
// is asked for and must be waiting before the switch, and the switch leaves the old one its
// replica with the output held until the new one acknowledges, so a host may die at any
// instant of it and a replica that no output has outrun still exists.
Verdict OwnerKeepsOrRedirectsReplication(const Ctx& x) {
  if (!x.mine->Replicating()) return Pass();
  auto candidates = BackupCandidates(x);
  const std::string* move_to = x.state.move(x.v.name);
  const std::string& cur = x.mine->standby_host;
  // Its host left the view (cut off, or dead) or is being evacuated: replication stops, the
  // standby keeping its replica and the output held (kStopReplication), and
  // OwnerReleasesHeldOutput lets the output go only at a new generation, which that replica
  // cannot take over. A cut-off standby never hears that it should end, and its replica lived
  // on: released at the old generation, the output outran it, and it took over once its
  // partition healed without the owner (AgentSim.AStandbyCutOffWhenItsReplication...; the
  // sweep's seed 440: a standby partitioned, then the owner's VMM killed). Corosync drops the
  // host before the replication's own timeout (io_timeout_ms), so this was the usual path.
  if (!x.state.live(cur) || x.state.evacuating(cur)) {
    return Do(Action::kStopReplication, x, cur, x.G, x.state.live(cur) ? "standby host evacuated" : "standby host left");
  }
  const bool to_move_target = move_to && !candidates.empty() && candidates.front() == *move_to;
  const bool preferred_back = !candidates.empty() && candidates.front() != cur &&
                              (candidates.front() == x.v.primary || candidates.front() == x.v.backup || to_move_target) &&
                              (x.mine->ReplicationIs(ReplicationState::kProtected) || to_move_target);
  if (!preferred_back) return Wait();
  auto nb = x.state.protect_not_before.find(x.v.name);
  if (nb != x.state.protect_not_before.end() && x.state.now_ms < nb->second) return Wait();  // backing off
  const std::string& target = candidates.front();
  const std::string why = to_move_target ? "move to " + target : "back to " + target;
  return ProtectOn(x, target, Action::kSwitchStandby, why, why);
}

Verdict OwnerProtects(const Ctx& x) {
  auto candidates = BackupCandidates(x);
  if (candidates.empty()) return Wait();  // nowhere to protect it: runs unprotected (the agent says so)
  auto nb = x.state.protect_not_before.find(x.v.name);
  if (nb != x.state.protect_not_before.end() && x.state.now_ms < nb->second) return Wait();  // backing off
  return ProtectOn(x, candidates.front(), Action::kReplicate, "standby ready", "protect");
}

// --- Rules for the holder of a standby of another host's VM ---

Verdict StandbyTakesOverAGoneOwner(const Ctx& x) {
  // A standby its primary ended on purpose (replication stopped without keeping it: its host
  // had left the view) holds a replica the released output has outrun: it never takes over,
  // and ends (the next rule). One whose state is unknown (its probe unanswered) waits. Found
  // by AgentSimDrills: the standby's host rejoined with its ended replica, the owner's host
  // died before the next tick ended it, and it won the failover over the live standby that
  // held every acknowledged write (47 lost).
  if (x.mine->StandbyIs(StandbyState::kEnded) || x.mine->StandbyIs(StandbyState::kCancelled)) return Pass();
  if (!x.mine->standby_state) return Wait();
  // A handover to this standby whose answer was lost: the old primary stays paused and sealed
  // (commit-unknown) and waits for a running guest that, if this standby never ran the VM, no
  // rule would bring. It is as good as gone: this replica takes over at the next generation.
  const Instance* owner = x.state.instance(x.c->host, x.v.name);
  const bool handover_lost = owner && owner->primary() && owner->standby_host == x.self &&
                             owner->ReplicationIs(ReplicationState::kHandoverIndeterminate);
  if (OwnerAlive(x) && !handover_lost) return Pass();
  // A host that left gets promote_delay_ms to fence itself first (with a watchdog lease: the
  // lease, by which its VMMs fence themselves even if its agent is gone); a VM whose host is still
  // here but lost its process is taken over at once.
  const bool waited = x.state.live(x.c->host) || x.state.absent_ms(x.c->host, x.state.now_ms) >=
                                                       std::max(x.config.promote_delay_ms, x.config.lease_ms);
  if (!waited) return Wait();
  // A make-before-break switch left two replicas: the owner last asked for protection on
  // another host, and that standby holds a checkpoint at this generation. The output may
  // have been released on its acknowledgement, so only it holds every acknowledged write:
  // it claims, this one waits (and ends once the claim names the other).
  if (auto p = x.state.protect(x.v.name); p && p->first != x.self && p->second == x.G) {
    const Instance* other = x.state.instance(p->first, x.v.name);
    if (x.state.live(p->first) && other && other->standby() && other->generation == x.G && other->committed > 0) {
      return Wait();
    }
  }
  if (x.mine->committed > 0 && x.mine->generation == x.G && !x.claim_pending) {
    return Do(Action::kClaim, x, x.self, x.G + 1, "failover");
  }
  if (x.mine->committed == 0) {
    return Do(Action::kKill, x, x.self, x.mine->generation, "owner gone before a checkpoint arrived");
  }
  return Wait();
}

// A standby that lost its primary may hold the only replica of a host that is dying (its
// connection drops before Corosync says so): it goes only once the owner's own report shows
// the replication to it over.
Verdict StandbyEndsWhenNoLongerUsed(const Ctx& x) {
  // While the owner holds its output after leaving this standby (a switch under way), this
  // replica is the fallback: it goes once another standby protects the VM or the output left.
  const Instance* owner = x.state.instance(x.c->host, x.v.name);
  bool owner_done = false;
  if (owner && owner->primary() && !owner->phase) {
    // Not answering its agent's probes: what it last said may be all it has (a restarted
    // agent's VMM it could not yet ask), so nothing of it says the replica is unused.
  } else if (owner && owner->ReplicationIs(ReplicationState::kHandedOver)) {
    owner_done = true;
  } else if (owner && owner->standby_host != x.self) {
    owner_done = owner->ReplicationIs(ReplicationState::kProtected) || !owner->output_held;
  } else if (owner) {
    owner_done = owner->ReplicationIs(ReplicationState::kFailed) ||
                 (owner->ReplicationIs(ReplicationState::kStopped) && !owner->output_held);
  }
  const bool over = x.mine->StandbyIs(StandbyState::kEnded) || x.mine->StandbyIs(StandbyState::kCancelled) ||
                    (x.mine->StandbyIs(StandbyState::kPrimaryLost) && owner_done);
  auto p = x.state.protect(x.v.name);
  const bool reassigned =
      p && (p->first != x.self || p->second != x.mine->generation) && x.mine->StandbyIs(StandbyState::kWaiting);
  if (over || x.mine->generation < x.G || reassigned) {
    return Do(Action::kKill, x, x.self, x.mine->generation, "standby no longer used");
  }
  return Wait();
}

// --- A host with nothing of the VM ---

Verdict StartAStandbyWhenAsked(const Ctx& x) {
  auto p = x.state.protect(x.v.name);
  if (p && p->first == x.self && p->second == x.G && OwnerAlive(x) && !x.state.evacuating(x.self)) {
    const Instance* owner = x.state.instance(x.c->host, x.v.name);
    // Asked while the owner replicates elsewhere: the new standby of a make-before-break switch.
    if (!owner->Replicating() || owner->standby_host != x.self) {
      return Do(Action::kStartStandby, x, x.c->host, x.G, "asked by " + x.c->host);
    }
  }
  return Wait();
}

constexpr std::array kFirstRules = {
    Rule{"a primary claimed at the next generation (to disown a lost standby, or handed the VM back) takes it and "
         "releases its output",
         OwnerTakesItsUnprotectedClaim},
    Rule{"a primary of an older generation, or of one another host owns, is killed once that owner runs it",
         StaleLocalPrimary},
    Rule{"a primary a handover made here claims its new generation", HandoverMadeThisThePrimary},
    Rule{"a VM never started is claimed by its start host", NeverStarted},
};
constexpr std::array kOwnerWithNothingHereRules = {
    Rule{"hand a failover whose standby died before its promotion back to the primary it protected",
         OwnerHandsBackAStandbyItLost},
    Rule{"boot what this host claimed at start", OwnerBootsWhatItClaimed},
};
constexpr std::array kOwnerRules = {
    Rule{"promote the local standby this host claimed at failover", OwnerPromotesItsStandby},
    Rule{"unfence a primary this host still owns", OwnerUnfences},
    Rule{"do nothing more until the guest runs", OwnerWaitsForARunningGuest},
    Rule{"release output held that nothing else will release", OwnerReleasesHeldOutput},
    Rule{"hand over to an in-sync standby on evacuation or a move", OwnerHandsOver},
    Rule{"keep replicating, stop if the standby's host left, or switch standbys make-before-break",
         OwnerKeepsOrRedirectsReplication},
    Rule{"protect: replicate to a waiting standby, or ask a host for one", OwnerProtects},
};
constexpr std::array kStandbyRules = {
    Rule{"take over from an owner that is gone", StandbyTakesOverAGoneOwner},
    Rule{"end a standby that is no longer used", StandbyEndsWhenNoLongerUsed},
};
constexpr std::array kBystanderRules = {
    Rule{"start a standby when the owner asks this host", StartAStandbyWhenAsked},
};

template <size_t N>
std::optional<Action> Apply(const std::array<Rule, N>& rules, const Ctx& x, bool* decided) {
  for (const Rule& r : rules) {
    Verdict v = r.fn(x);
    if (v.applies) {
      *decided = true;
      return v.action;
    }
  }
  return std::nullopt;
}

std::optional<Action> DecideVm(const Ctx& x) {
  bool decided = false;
  auto a = Apply(kFirstRules, x, &decided);
  if (decided) return a;
  if (x.c->host == x.self) return x.mine ? Apply(kOwnerRules, x, &decided) : Apply(kOwnerWithNothingHereRules, x, &decided);
  if (x.mine && x.mine->standby()) return Apply(kStandbyRules, x, &decided);
  if (!x.mine) return Apply(kBystanderRules, x, &decided);
  return std::nullopt;
}

// The actions that ask the local VMM to act and wait on its answer. A VMM that did not answer
// its last probe (hung, stopped, overloaded, not up yet) is asked none of them: what it last
// said may be stale (an unfence or a release of a state it has left), and each would wait on
// a VMM that does not read. It is fenced when it must be (the request waits in its socket)
// and killed once hung (hung_vmm_ms); the rules take it up again once it answers.
bool AsksTheVmm(Action::Kind k) {
  switch (k) {
    case Action::kUnfence:
    case Action::kReleaseOutput:
    case Action::kPromote:
    case Action::kReplicate:
    case Action::kStopReplication:
    case Action::kSwitchStandby:
    case Action::kHandover:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::vector<Action> Decide(const ClusterConfig& config, const std::string& self, const ClusterState& state,
                           const std::vector<Instance>& local, const std::set<std::string>& busy) {
  std::vector<Action> out;
  // A VMM silent past hung_vmm_ms is killed first, with or without quorum, busy or not (a
  // worker's call to it is as stuck as the probes): a hung primary can be neither fenced nor
  // asked anything, and once it is gone the rules below take it as a crash (its standby's
  // host claims the VM, or the owner re-protects a lost standby). Killing can only end a copy.
  std::set<std::string> hung;
  for (const auto& i : local) {
    if (config.hung_vmm_ms && i.silent_ms >= config.hung_vmm_ms) {
      out.push_back({Action::kKill, i.vm, self, i.generation,
                     "hung: its VMM answered no probe for " + std::to_string(i.silent_ms) + " ms"});
      hung.insert(i.vm);
    }
  }
  if (!state.quorate() || state.cut_off()) {
    // Cut off from the majority, or from the group's messages (the others will count this
    // agent as hung): this host's guests must stop before the others promote.
    const char* why = state.quorate() ? "cut off from the group's messages" : "no quorum";
    for (const auto& i : local) {
      if (i.primary() && !i.fenced && !busy.count(i.vm) && !hung.count(i.vm)) {
        out.push_back({Action::kFence, i.vm, self, i.generation, why});
      }
    }
    return out;
  }
  if (!state.complete()) return out;  // not every member heard since the view changed
  for (const auto& v : config.vms) {
    if (busy.count(v.name) || hung.count(v.name)) continue;
    const Instance* mine = nullptr;
    for (const auto& i : local) {
      if (i.vm == v.name) mine = &i;
    }
    const Claim* c = state.claim(v.name);
    Ctx x{config, state, self, v, c, c ? c->generation : 0, mine, state.pending_claim.count(v.name) > 0};
    auto a = DecideVm(x);
    const bool unanswered = mine && (mine->silent_ms || !mine->Answered());
    if (a && unanswered && AsksTheVmm(a->kind)) continue;
    if (a) out.push_back(std::move(*a));
  }
  return out;
}

}  // namespace ferry::ha
