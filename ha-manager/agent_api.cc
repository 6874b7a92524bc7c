// The agent's API (HOSTDIR/agent.sock, JSON lines) and its placement duties: status,
// evacuate, move (a live migration to a named host), balance (the placement policy's plan,
// sent as moves unless dry_run), and the leader's periodic balancing.
#include <unistd.h>

#include <optional>

#include "ferry/base/clock.h"
#include "ferry/ha/agent.h"
#include "ferry/ha/balance.h"
#include "ferry/ha/json_fields.h"

namespace ferry::ha {

using nlohmann::json;

namespace {

json Error(const std::string& message) { return {{"ok", false}, {"error", message}, {"code", "invalid_argument"}}; }
json Refused(const std::string& message) { return {{"ok", false}, {"error", message}, {"code", "refused"}}; }

// A boolean field: `dflt` when absent, nullopt when it is there but not a boolean. Such a
// request is refused: "on": "false" read as the default (true) evacuated a host.
std::optional<bool> Flag(const json& req, const char* key, bool dflt) {
  auto it = req.find(key);
  if (it == req.end()) return dflt;
  if (!it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}
json NotAFlag(const char* key) { return Error(std::string("\"") + key + "\" must be true or false"); }

}  // namespace

bool Agent::CountsProtected(const json& status, const std::string& vm) {
  if (!status.is_object()) return false;
  auto prot = status.find("protection");
  if (prot == status.end() || !prot->is_object()) return false;
  auto p = prot->find(vm);
  if (p == prot->end() || !p->is_object()) return false;
  auto is = p->find("protected");
  if (is == p->end() || !is->is_boolean() || !is->get<bool>()) return false;
  if (auto busy = status.find("busy"); busy != status.end() && busy->is_array()) {
    for (const auto& b : *busy) {
      if (b.is_string() && b.get<std::string>() == vm) return false;
    }
  }
  return true;
}

json Agent::StatusJson() const {
  json local = json::array();
  for (const auto& i : last_local_) local.push_back(i.ToJson());
  json ev = json::array();
  for (const auto& e : events_) ev.push_back(e);
  json prot = json::object();
  for (const auto& [vm, p] : protection_) {
    prot[vm] = {{"protected", p.unprotected_since_ms == 0},
                {"unprotected_ms", p.unprotected_since_ms ? now_ms_ - p.unprotected_since_ms : 0},
                {"attempts", p.attempts},
                {"next_try_in_ms", p.not_before_ms > now_ms_ ? p.not_before_ms - now_ms_ : 0},
                {"last_error", p.last_error}};
  }
  return {{"ok", true}, {"host", self_.name}, {"pid", getpid()}, {"cluster", state_->ToJson()}, {"local", local},
          {"stats", last_stats_}, {"protection", prot}, {"busy", busy_}, {"events", ev}};
}

json Agent::Handle(const json& req) {
  std::lock_guard lock(mu_);
  if (!req.is_object()) return Error("the request is not a JSON object");
  const std::string op = StringField(req, "op");
  if (op == "status") return StatusJson();
  if (op == "evacuate") {
    const std::string h = StringField(req, "host");
    if (!config_.Host(h)) return Error("no host named \"" + h + "\" in the cluster config");
    const std::optional<bool> on = Flag(req, "on", true);
    if (!on) return NotAFlag("on");
    if (!state_->quorate()) return Refused("this agent's partition has no quorum");
    Send(ClusterState::EvacuateMessage(h, *on, state_->evacuation_seq(h) + 1));
    return {{"ok", true}};
  }
  if (op == "move") return HandleMove(req);
  if (op == "balance") return HandleBalance(req);
  return Error("unknown op \"" + op + "\" (expected status, evacuate, move or balance)");
}

json Agent::HandleMove(const json& req) {
  const std::string vm = StringField(req, "vm"), to = StringField(req, "to");
  if (!config_.Vm(vm)) return Error("no vm named \"" + vm + "\" in the cluster config");
  const std::optional<bool> on = Flag(req, "on", true);
  if (!on) return NotAFlag("on");
  if (!state_->quorate()) return Refused("this agent's partition has no quorum");
  if (!*on) {
    Send(ClusterState::MoveMessage(vm, to, false));
    return {{"ok", true}};
  }
  if (!config_.Host(to)) return Error("no host named \"" + to + "\" in the cluster config");
  if (!state_->live(to)) return Refused("host " + to + " is not in the cluster now");
  if (state_->evacuating(to)) return Refused("host " + to + " is being evacuated");
  const Claim* c = state_->claim(vm);
  if (!c) return Refused(vm + " is not running anywhere yet");
  if (c->host == to) return Refused(vm + " already runs on " + to);
  if (const std::string* m = state_->move(vm)) return Refused(vm + " is already moving to " + *m);
  Send(ClusterState::MoveMessage(vm, to));
  return {{"ok", true}, {"vm", vm}, {"from", c->host}, {"to", to}};
}

json Agent::HandleBalance(const json& req) {
  const std::optional<bool> dry_run = Flag(req, "dry_run", true);
  if (!dry_run) return NotAFlag("dry_run");
  if (!state_->quorate()) return Refused("this agent's partition has no quorum");
  if (!state_->complete()) return Refused("not every host has reported since the last view change; try again");
  BalancePlan plan = PlanBalance(config_, *state_, now_ms_);
  if (!*dry_run) {
    for (const auto& m : plan.moves) SendMove(m.vm, m.from, m.to, m.why);
  }
  json out = plan.ToJson();
  out["ok"] = true;
  out["dry_run"] = *dry_run;
  out["moving"] = state_->moves();
  return out;
}

void Agent::MaybeBalanceLocked(uint64_t now_ms) {
  const PlacementPolicy& p = config_.policy;
  if (p.interval_s <= 0 || (p.max_cpu_pct <= 0 && p.max_mem_pct <= 0 && p.anti_affinity.empty())) return;
  if (now_ms - last_balance_ms_ < static_cast<uint64_t>(p.interval_s * 1000)) return;
  last_balance_ms_ = now_ms;
  // One agent plans for the cluster: the member with the lowest node id, in a settled view.
  if (!state_->quorate() || !state_->complete() || !state_->moves().empty()) return;
  for (const auto& m : state_->members()) {
    const HostConfig* h = config_.Host(m);
    if (h && h->nodeid < self_.nodeid) return;
  }
  BalancePlan plan = PlanBalance(config_, *state_, now_ms);
  // One move at a time: the next check sees its effect on the load.
  if (!plan.moves.empty()) SendMove(plan.moves.front().vm, plan.moves.front().from, plan.moves.front().to, plan.moves.front().why);
}

void Agent::SendMove(const std::string& vm, const std::string& from, const std::string& to, const std::string& why) {
  Event("balance", vm, from + " -> " + to + ": " + why, {{"from", from}, {"to", to}});
  Send(ClusterState::MoveMessage(vm, to));
}

}  // namespace ferry::ha
