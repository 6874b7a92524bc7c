// The HA agent's API (HOSTDIR/agent.sock, JSON lines) and its placement duties: status,
// evacuate, move (a live migration to a named host), balance (the placement policy's plan,
// sent as moves unless dry_run), and the leader's periodic balancing.
#include <unistd.h>

#include "ferry/base/clock.h"
#include "ferry/ha/balance.h"
#include "ha_agent_impl.h"

namespace ferry::cli {

namespace {

json Error(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

json Agent::Handle(const json& req) {
  std::lock_guard lock(mu_);
  std::string op = req.value("op", "");
  if (op == "status") {
    json local = json::array();
    for (const auto& i : last_sent_) local.push_back(i.ToJson());
    json ev = json::array();
    for (const auto& e : events_) ev.push_back(e);
    return {{"ok", true}, {"host", self_->name}, {"pid", getpid()}, {"cluster", state_->ToJson()}, {"local", local},
            {"stats", sampler_->Stats()}, {"events", ev}};
  }
  if (op == "evacuate") {
    std::string h = req.value("host", "");
    if (!config_.Host(h)) return Error("no host named " + h + " in " + config_path_);
    if (!state_->quorate()) return Error("this agent's partition has no quorum");
    Send(ha::ClusterState::EvacuateMessage(h, req.value("on", true)));
    return {{"ok", true}};
  }
  if (op == "move") return HandleMove(req);
  if (op == "balance") return HandleBalance(req);
  return Error("unknown op \"" + op + "\" (expected status, evacuate, move or balance)");
}

json Agent::HandleMove(const json& req) {
  const std::string vm = req.value("vm", ""), to = req.value("to", "");
  if (!config_.Vm(vm)) return Error("no vm named " + vm + " in " + config_path_);
  if (!state_->quorate()) return Error("this agent's partition has no quorum");
  if (!req.value("on", true)) {
    Send(ha::ClusterState::MoveMessage(vm, to, false));
    return {{"ok", true}};
  }
  if (!config_.Host(to)) return Error("no host named " + to + " in " + config_path_);
  if (!state_->live(to)) return Error("host " + to + " is not in the cluster now");
  if (state_->evacuating(to)) return Error("host " + to + " is being evacuated");
  const ha::Claim* c = state_->claim(vm);
  if (!c) return Error(vm + " is not running anywhere yet");
  if (c->host == to) return Error(vm + " already runs on " + to);
  if (const std::string* m = state_->move(vm)) return Error(vm + " is already moving to " + *m);
  Send(ha::ClusterState::MoveMessage(vm, to));
  return {{"ok", true}, {"vm", vm}, {"from", c->host}, {"to", to}};
}

json Agent::HandleBalance(const json& req) {
  if (!state_->quorate()) return Error("this agent's partition has no quorum");
  if (!state_->complete()) return Error("not every host has reported since the last view change; try again");
  ha::BalancePlan plan = ha::PlanBalance(config_, *state_, RealtimeMs());
  const bool dry_run = req.value("dry_run", true);
  if (!dry_run) {
    for (const auto& m : plan.moves) SendMove(m);
  }
  json out = plan.ToJson();
  out["ok"] = true;
  out["dry_run"] = dry_run;
  out["moving"] = state_->moves();
  return out;
}

void Agent::MaybeBalance(uint64_t now_ms) {
  const ha::PlacementPolicy& p = config_.policy;
  if (p.interval_s <= 0 || (p.max_cpu_pct <= 0 && p.max_mem_pct <= 0 && p.anti_affinity.empty())) return;
  if (now_ms - last_balance_ms_ < static_cast<uint64_t>(p.interval_s * 1000)) return;
  last_balance_ms_ = now_ms;
  // One agent plans for the cluster: the member with the lowest node id, in a settled view.
  if (!state_->quorate() || !state_->complete() || !state_->moves().empty()) return;
  for (const auto& m : state_->members()) {
    const ha::HostConfig* h = config_.Host(m);
    if (h && h->nodeid < self_->nodeid) return;
  }
  ha::BalancePlan plan = ha::PlanBalance(config_, *state_, now_ms);
  // One move at a time: the next check sees its effect on the load.
  if (!plan.moves.empty()) SendMove(plan.moves.front());
}

void Agent::SendMove(const ha::PlannedMove& m) {
  Event("balance", m.vm, m.from + " -> " + m.to + ": " + m.why, {{"from", m.from}, {"to", m.to}});
  Send(ha::ClusterState::MoveMessage(m.vm, m.to));
}

}  // namespace ferry::cli
