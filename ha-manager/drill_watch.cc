#include "drill_watch.h"

#include "ferry/ha/json_fields.h"

namespace ferry::ha {

Result<json> AgentCall(const HostConfig& h, const json& req) { return vmhost::CallApi(h.dir + "/agent.sock", req, 3000); }

// The first agent that answers and is quorate, preferring hosts other than `avoid`.
Result<json> AnyAgent(const ClusterConfig& c, const std::string& avoid) {
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& h : c.hosts) {
      if ((pass == 0) == (h.name == avoid)) continue;
      auto r = AgentCall(h, {{"op", "status"}});
      if (r.ok() && BoolField(Field(*r, "cluster"), "quorate")) return r;
    }
  }
  return NotFound("no quorate HA agent answered");
}

json VmEntry(const json& status, const std::string& vm) {
  for (const auto& v : ArrayField(Field(status, "cluster"), "vms")) {
    if (StringField(v, "name") == vm) return v;
  }
  return json::object();
}

// The first event on `status`'s host at or after t_ms matching kind (and vm, if given).
uint64_t EventTime(const json& status, uint64_t t_ms, const std::vector<std::string>& kinds, const std::string& vm,
                   std::string* detail) {
  for (const auto& e : ArrayField(status, "events")) {
    const uint64_t t = e.value("t_ms", uint64_t{0});
    if (t < t_ms) continue;
    if (!vm.empty() && e.value("vm", "") != vm && !e.value("vm", "").empty()) continue;
    for (const auto& k : kinds) {
      if (e.value("kind", "") == k) {
        if (detail) *detail = e.value("detail", "");
        return t;
      }
    }
  }
  return 0;
}

bool Watch::UntilFailover(const std::string& avoid) {
  while (RealtimeMs() - t_fault_ < o_.timeout_s * 1000) {
    ::usleep(50 * 1000);
    auto s = AnyAgent(c_, avoid);
    if (!s.ok()) continue;
    json e = VmEntry(*s, vm_);
    if (e.value("generation", uint64_t{0}) > old_gen_ && e.value("state", "") == "running") {
      to_ = e.value("owner", "");
      generation_ = e.value("generation", uint64_t{0});
      break;
    }
  }
  const HostConfig* to = c_.Host(to_);
  if (!to) return false;
  auto ns = AgentCall(*to, {{"op", "status"}});
  if (!ns.ok()) return false;
  std::string detail;
  const bool vmm_fault = o_.fault == Fault::kKillVm || o_.fault == Fault::kStopVm;  // the host stays: its claim
  t_detect_ = vmm_fault ? EventTime(*ns, t_fault_, {"claim"}, vm_) : EventTime(*ns, t_fault_, {"member-left"}, "");
  t_promoted_ = EventTime(*ns, t_fault_, {"promoted", "handed-over"}, vm_, &detail);
  if (auto p = detail.find("checkpoint "); p != std::string::npos) committed_ = std::strtoull(detail.c_str() + p + 11, nullptr, 10);
  if (!t_promoted_) t_promoted_ = RealtimeMs();
  return true;
}

void Watch::FencedAndRejoined(const HostConfig& old_host, const std::function<void()>& heal, json* extra) {
  // The old owner's event log says when it fenced. Asked until it answers with the event (up
  // to 5 s): a loaded host's agent may answer late, and the fence time, not the time of the
  // question, is what is compared with the promotion.
  uint64_t t_fenced = 0;
  for (const uint64_t t_ask = RealtimeMs(); !t_fenced && RealtimeMs() - t_ask < 5000; ::usleep(100 * 1000)) {
    auto old_agent = AgentCall(old_host, {{"op", "status"}});
    if (old_agent.ok()) t_fenced = EventTime(*old_agent, t_fault_, {"fence"}, vm_);
  }
  (*extra)["fenced_after_ms"] = t_fenced ? static_cast<int64_t>(t_fenced - t_fault_) : -1;
  (*extra)["fenced_before_promote"] = t_fenced != 0 && t_promoted_ != 0 && t_fenced <= t_promoted_;
  SleepS(o_.heal_after_s);
  heal();
  std::string rejoined = "none";
  const uint64_t t_heal = RealtimeMs();
  while (RealtimeMs() - t_heal < 30000) {
    ::usleep(100 * 1000);
    auto s = AgentCall(old_host, {{"op", "status"}});
    if (!s.ok()) continue;
    bool primary = false, standby = false;
    for (const auto& i : (*s)["local"]) {
      if (i.value("vm", "") != vm_) continue;
      primary |= i.value("role", "") == "primary";
      standby |= i.value("role", "") == "standby" && i.value("state", "") == "replicating";
    }
    if (!primary && standby) {
      rejoined = "standby";
      break;
    }
  }
  (*extra)["rejoined_as"] = rejoined;
  (*extra)["rejoin_ms"] = RealtimeMs() - t_heal;
}

bool Watch::UntilReprotected(const std::function<void()>& heal) {
  bool healed = false;
  while (RealtimeMs() - t_fault_ < o_.timeout_s * 1000) {
    ::usleep(50 * 1000);
    if (!healed && RealtimeMs() - t_fault_ >= o_.heal_after_s * 1000) {
      heal();
      healed = true;
    }
    auto s = AnyAgent(c_, "");
    if (!s.ok()) continue;
    json e = VmEntry(*s, vm_);
    if (e.value("owner", "") != owner_) return false;  // it failed over
    // The owner claims the next generation itself when it lets the held output go (the lost
    // standby's replica disowned): the same host, a newer generation, not a failover.
    if (const uint64_t g = e.value("generation", uint64_t{0}); g > old_gen_) generation_ = g;
    const bool prot = e.value("replication", "") == "protected";
    if (!prot && !t_unprotected_) t_unprotected_ = RealtimeMs();
    if (prot && t_unprotected_) {
      t_reprotected_ = RealtimeMs();
      reprotected_by_ = e.value("standby_host", "");
      if (!healed) heal();
      return true;
    }
  }
  if (!healed) heal();
  return false;
}

bool Watch::StillServing(uint64_t timeout_ms) {
  for (const uint64_t t0 = RealtimeMs(); RealtimeMs() - t0 < timeout_ms; ::usleep(100 * 1000)) {
    auto s = AnyAgent(c_, "");
    if (!s.ok()) continue;
    json e = VmEntry(*s, vm_);
    if (e.value("owner", "") != owner_ || e.value("generation", uint64_t{0}) != old_gen_) return false;
    if (e.value("state", "") == "running") return true;
  }
  return false;
}

json Watch::Card(const json& load, bool old_sent_after, uint64_t old_epochs) const {
  const uint64_t stale = load.value("stale_reads", uint64_t{0}), unreflected = load.value("unreflected_replies", uint64_t{0});
  json card = {{"vm", vm_},
               {"to", to_.empty() ? owner_ : to_},
               {"generation", generation_ ? generation_ : old_gen_},
               {"rto_ms", load.value("client_gap_ms", 0.0)},
               {"lost_writes", load.value("lost_puts", uint64_t{0})},
               {"split_brain", old_sent_after || stale > 0 || unreflected > 0},
               {"stale_reads", stale},
               {"unreflected_replies", unreflected},
               {"acked_puts", load.value("acked_puts", uint64_t{0})}};
  if (t_promoted_) {
    card["detect_ms"] = t_detect_ ? static_cast<int64_t>(t_detect_ - t_fault_) : -1;
    card["promote_ms"] = t_detect_ ? static_cast<int64_t>(t_promoted_ - t_detect_) : -1;
    card["rpo_epochs"] = committed_ ? static_cast<int64_t>(old_epochs + 1 > committed_ ? old_epochs + 1 - committed_ : 0) : -1;
  }
  if (t_unprotected_) {
    card["unprotected_after_ms"] = static_cast<int64_t>(t_unprotected_ - t_fault_);
    card["reprotect_ms"] = t_reprotected_ ? static_cast<int64_t>(t_reprotected_ - t_fault_) : -1;
    card["reprotected_by"] = reprotected_by_;
  }
  return card;
}

}  // namespace ferry::ha
