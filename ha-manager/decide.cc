// Decide(): one agent's next steps for every protected VM (cluster_state.h explains the
// protocol). Each rule is idempotent; the agent marks a VM busy while it carries one out.
#include <algorithm>

#include "ferry/ha/cluster_state.h"

namespace ferry::ha {
namespace {

bool Replicating(const Instance& i) {
  return i.replication == "connecting" || i.replication == "syncing" || i.replication == "protected";
}

// Where vm's standby should be: its preferred hosts first (the configured primary and backup,
// so a failed-over VM goes back to being protected by its old home once that returns), then
// the rest in config order; never the owner, a host out of the view, or one being evacuated.
std::vector<std::string> BackupCandidates(const ClusterConfig& config, const VmSpec& v, const std::string& owner,
                                          const ClusterState& state) {
  std::vector<std::string> order;
  // A VM being moved is protected by its destination first: the move is a handover to it.
  if (const std::string* to = state.move(v.name)) order.push_back(*to);
  order.push_back(v.primary);
  if (!v.backup.empty()) order.push_back(v.backup);
  for (const auto& h : config.hosts) {
    if (std::find(order.begin(), order.end(), h.name) == order.end()) order.push_back(h.name);
  }
  std::vector<std::string> out;
  for (const auto& h : order) {
    if (h != owner && state.live(h) && !state.evacuating(h)) out.push_back(h);
  }
  return out;
}

// The host that boots a never-started VM: its preferred primary, else its backup, else the
// first host in config order, among those in the view and not evacuating.
std::string StartHost(const ClusterConfig& config, const VmSpec& v, const ClusterState& state) {
  std::vector<std::string> order = {v.primary};
  if (!v.backup.empty()) order.push_back(v.backup);
  for (const auto& h : config.hosts) order.push_back(h.name);
  for (const auto& h : order) {
    if (state.live(h) && !state.evacuating(h)) return h;
  }
  return "";
}

// Is the owner's primary of vm still there: its host in the view and its report listing it.
bool OwnerAlive(const ClusterState& state, const Claim& c, const std::string& vm) {
  if (!state.live(c.host)) return false;
  const Instance* i = state.instance(c.host, vm);
  return i && i->role == "primary";
}

}  // namespace

std::vector<Action> Decide(const ClusterConfig& config, const std::string& self, const ClusterState& state,
                           const std::vector<Instance>& local, const std::set<std::string>& busy) {
  std::vector<Action> out;
  auto mine_of = [&](const std::string& vm) -> const Instance* {
    for (const auto& i : local) {
      if (i.vm == vm) return &i;
    }
    return nullptr;
  };
  if (!state.quorate()) {
    // Cut off from the majority: this host's guests must stop before the others promote.
    for (const auto& i : local) {
      if (i.role == "primary" && !i.fenced && !busy.count(i.vm)) out.push_back({Action::kFence, i.vm, self, i.generation, "no quorum"});
    }
    return out;
  }
  if (!state.complete()) return out;  // not every member heard since the view changed
  for (const auto& v : config.vms) {
    if (busy.count(v.name)) continue;
    const Claim* c = state.claim(v.name);
    const uint64_t G = c ? c->generation : 0;
    const Instance* mine = mine_of(v.name);
    const bool claim_pending = state.pending_claim.count(v.name) > 0;

    if (mine && mine->role == "primary") {
      if (mine->generation < G || (mine->generation == G && c->host != self)) {
        out.push_back({Action::kKill, v.name, self, mine->generation,
                       "stale: generation " + std::to_string(G) + " runs on " + c->host});
        continue;
      }
      if (mine->generation > G) {  // a handover made this one the primary
        if (!claim_pending) out.push_back({Action::kClaim, v.name, self, mine->generation, "handover"});
        continue;
      }
    }
    if (!c) {
      bool everyone = std::all_of(config.hosts.begin(), config.hosts.end(), [&](const HostConfig& h) { return state.live(h.name); });
      if ((everyone || state.startup_grace_over) && StartHost(config, v, state) == self && !claim_pending) {
        out.push_back({Action::kClaim, v.name, self, 1, "start"});
      }
      continue;
    }
    if (c->host == self) {
      if (!mine) {
        auto l = state.launched.find(v.name);
        if (c->why == "start" && (l == state.launched.end() || l->second < G)) {
          out.push_back({Action::kStartPrimary, v.name, self, G, "claimed"});
        }
        continue;
      }
      if (mine->role == "standby") {
        if (c->why == "failover" && mine->committed > 0) out.push_back({Action::kPromote, v.name, self, G, "failover"});
        continue;
      }
      if (mine->fenced) {
        out.push_back({Action::kUnfence, v.name, self, G, "quorum regained, still the owner"});
        continue;
      }
      if (mine->state != "running") continue;
      if (mine->replication == "failed" && mine->output_held) {
        out.push_back({Action::kReleaseOutput, v.name, self, G, "standby lost while quorate"});
        continue;
      }
      auto candidates = BackupCandidates(config, v, self, state);
      // Evacuation and moves both end in a handover to a standby that is in sync.
      const std::string* move_to = state.move(v.name);
      const std::string& standby = mine->standby_host;
      if ((state.evacuating(self) || (move_to && *move_to == standby)) && mine->replication == "protected" &&
          state.live(standby) && !state.evacuating(standby)) {
        out.push_back({Action::kHandover, v.name, standby, G + 1, state.evacuating(self) ? "evacuating " + self : "move to " + standby});
        continue;
      }
      if (Replicating(*mine)) {
        const std::string& cur = mine->standby_host;
        bool gone = !state.live(cur) || state.evacuating(cur);
        const bool to_move_target = move_to && !candidates.empty() && candidates.front() == *move_to;
        bool preferred_back = !candidates.empty() && candidates.front() != cur &&
                              (candidates.front() == v.primary || candidates.front() == v.backup || to_move_target) &&
                              (mine->replication == "protected" || to_move_target);
        if (gone || preferred_back) {
          out.push_back({Action::kStopReplication, v.name, cur, G,
                         gone ? "standby host left" : to_move_target ? "move to " + *move_to : "back to " + candidates.front()});
        }
        continue;
      }
      if (candidates.empty()) continue;  // nowhere to protect it: runs unprotected
      const std::string& target = candidates.front();
      const Instance* sb = state.instance(target, v.name);
      if (sb && sb->role == "standby" && sb->state == "waiting" && sb->generation == G) {
        out.push_back({Action::kReplicate, v.name, target, G, "standby ready"});
      } else if (!sb) {
        auto sent = state.protect_sent.find(v.name);
        if (sent == state.protect_sent.end() || sent->second != target) {
          out.push_back({Action::kProtect, v.name, target, G, "protect"});
        }
      }
      continue;
    }
    // Another host owns the VM.
    if (mine && mine->role == "standby") {
      if (!OwnerAlive(state, *c, v.name)) {
        // A host that left gets promote_delay_ms to fence itself first; a VM whose host is
        // still here but lost its process is taken over at once.
        bool waited = state.live(c->host) || state.absent_ms(c->host, state.now_ms) >= config.promote_delay_ms;
        if (!waited) continue;
        if (mine->committed > 0 && mine->generation == G && !claim_pending) {
          out.push_back({Action::kClaim, v.name, self, G + 1, "failover"});
        } else if (mine->committed == 0) {
          out.push_back({Action::kKill, v.name, self, mine->generation, "owner gone before a checkpoint arrived"});
        }
        continue;
      }
      // A standby that lost its primary may hold the only replica of a host that is dying
      // (its connection drops before Corosync says so): it goes only once the owner's own
      // report shows the replication to it over.
      const Instance* owner = state.instance(c->host, v.name);
      const bool owner_done = owner && (owner->standby_host != self || owner->replication == "failed" ||
                                        owner->replication == "stopped" || owner->replication == "handed-over");
      bool over = mine->state == "ended" || mine->state == "cancelled" || (mine->state == "primary-lost" && owner_done);
      auto p = state.protect(v.name);
      bool reassigned = p && (p->first != self || p->second != mine->generation) && mine->state == "waiting";
      if (over || mine->generation < G || reassigned) {
        out.push_back({Action::kKill, v.name, self, mine->generation, "standby no longer used"});
      }
      continue;
    }
    if (!mine) {
      auto p = state.protect(v.name);
      if (p && p->first == self && p->second == G && OwnerAlive(state, *c, v.name) && !state.evacuating(self)) {
        const Instance* owner = state.instance(c->host, v.name);
        if (!Replicating(*owner)) out.push_back({Action::kStartStandby, v.name, self, G, "asked by " + c->host});
      }
    }
  }
  return out;
}

}  // namespace ferry::ha
