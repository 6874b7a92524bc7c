#include "ferry/ha/cluster_state.h"

#include <algorithm>
#include <tuple>

namespace ferry::ha {

using nlohmann::json;

namespace {

// An unsigned integer field of another agent's message (a generation, a count), 0 if absent.
// Anything else throws json::type_error, as value() does for a string where a number belongs,
// so the message or entry is ignored: value<uint64_t>() would read -1 as 2^64-1 (a claim no
// later generation could ever beat) and convert a fraction, or a float out of range (with
// undefined behaviour).
uint64_t Unsigned(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? 0 : it->get_ref<const json::number_unsigned_t&>();
}

}  // namespace

const char* RoleName(Role r) { return r == Role::kPrimary ? "primary" : "standby"; }

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "primary") return Role::kPrimary;
  if (name == "standby") return Role::kStandby;
  return std::nullopt;
}

json Instance::ToJson() const {
  std::string state = silent_ms ? "not-answering" : "starting";
  if (primary() && phase) state = vmhost::GuestRuns(*phase) ? "running" : vmhost::PhaseName(*phase);
  if (standby() && standby_state) state = replication::StandbyStateName(*standby_state);
  json j = {{"vm", vm},
            {"role", RoleName(role)},
            {"state", state},
            {"generation", generation},
            {"fenced", fenced},
            {"replication", replication ? replication::ReplicationStateName(*replication) : ""},
            {"standby_host", standby_host},
            {"output_held", output_held},
            {"committed", committed},
            {"epochs", epochs},
            {"tx_frames", tx_frames}};
  if (silent_ms) j["silent_ms"] = silent_ms;
  return j;
}

Instance Instance::NotAnswering(const std::string& vm, const std::optional<Instance>& last, Role role, uint64_t generation,
                                const std::optional<std::pair<Role, uint64_t>>& told) {
  Instance i;
  if (last) i = *last;
  i.vm = vm;
  i.role = last ? last->role : role;
  i.generation = last ? last->generation : generation;
  if (told && told->second >= i.generation) std::tie(i.role, i.generation) = *told;
  i.phase.reset();
  i.standby_state.reset();
  return i;
}

bool Instance::Differs(const Instance& o) const {
  return vm != o.vm || role != o.role || phase != o.phase || standby_state != o.standby_state || generation != o.generation ||
         fenced != o.fenced || replication != o.replication || standby_host != o.standby_host ||
         output_held != o.output_held || (committed > 0) != (o.committed > 0);
}

std::optional<Instance> Instance::FromJson(const json& j) {
  if (!j.is_object()) return std::nullopt;
  try {
    Instance i;
    auto role = ParseRole(j.value("role", ""));
    if (!role) return std::nullopt;
    i.role = *role;
    i.vm = j.value("vm", "");
    const std::string state = j.value("state", "");
    if (i.primary()) {
      i.phase = vmhost::ParsePhase(state);
    } else {
      i.standby_state = replication::ParseStandbyState(state);
    }
    i.generation = Unsigned(j, "generation");
    i.fenced = j.value("fenced", false);
    i.replication = replication::ParseReplicationState(j.value("replication", ""));
    i.standby_host = j.value("standby_host", "");
    i.output_held = j.value("output_held", false);
    i.committed = Unsigned(j, "committed");
    i.epochs = Unsigned(j, "epochs");
    i.tx_frames = Unsigned(j, "tx_frames");
    i.silent_ms = Unsigned(j, "silent_ms");
    return i;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

const char* ActionName(Action::Kind k) {
  switch (k) {
    case Action::kClaim: return "claim";
    case Action::kStartPrimary: return "start-primary";
    case Action::kStartStandby: return "start-standby";
    case Action::kPromote: return "promote";
    case Action::kReplicate: return "replicate";
    case Action::kStopReplication: return "stop-replication";
    case Action::kSwitchStandby: return "switch-standby";
    case Action::kProtect: return "protect";
    case Action::kHandover: return "handover";
    case Action::kReleaseOutput: return "release-output";
    case Action::kFence: return "fence";
    case Action::kUnfence: return "unfence";
    case Action::kKill: return "kill";
  }
  return "?";
}

ClusterState::ClusterState(const ClusterConfig& config, std::string self) : config_(config), self_(std::move(self)) {}

void ClusterState::OnView(const std::set<std::string>& members, bool quorate, uint64_t now_ms) {
  if (members != members_) fresh_.clear();
  for (const auto& m : members) {
    if (!members_.count(m)) heard_ms_[m] = now_ms;  // joined: its silence counts from now
  }
  for (const auto& m : members_) {
    if (!members.count(m)) left_ms_[m] = now_ms;
  }
  members_ = members;
  quorate_ = quorate;
  for (auto it = reports_.begin(); it != reports_.end();) {
    it = members_.count(it->first) ? std::next(it) : reports_.erase(it);
  }
  for (auto it = stats_.begin(); it != stats_.end();) {
    it = members_.count(it->first) ? std::next(it) : stats_.erase(it);
  }
  for (auto it = moves_.begin(); it != moves_.end();) {
    it = members_.count(it->second) ? std::next(it) : moves_.erase(it);  // the target left
  }
}

bool ClusterState::complete() const {
  return std::all_of(members_.begin(), members_.end(), [&](const std::string& m) { return fresh_.count(m) > 0 || silent(m); });
}

bool ClusterState::cut_off() const {
  if (silence_ms_ == 0 || now_ms < stall_grace_until_ms_) return false;
  auto it = heard_ms_.find(self_);
  return it != heard_ms_.end() && now_ms > it->second && now_ms - it->second > self_silence_ms_;
}

bool ClusterState::silent(const std::string& host) const {
  if (silence_ms_ == 0 || host == self_ || !members_.count(host) || cut_off()) return false;
  auto it = heard_ms_.find(host);
  return it != heard_ms_.end() && now_ms > it->second && now_ms - it->second > silence_ms_;
}

uint64_t ClusterState::absent_ms(const std::string& host, uint64_t now) const {
  if (members_.count(host)) {
    if (!silent(host)) return 0;
    const uint64_t since = heard_ms_.at(host) + renew_bound_ms_;
    return now > since ? now - since : 0;
  }
  auto it = left_ms_.find(host);
  return it == left_ms_.end() || now < it->second ? 0 : now - it->second;
}

void ClusterState::Accept(const std::string& vm, const Claim& c) {
  // Only a majority decides who owns a VM. A claim (or a report) is delivered in the view it
  // was agreed in (virtual synchrony: views and messages arrive in one order), so one that a
  // host sent as it was being cut off comes back to it alone, in a view of its own, and must not
  // make it the owner there: the majority may already have given the same generation to
  // another host (a failover), and equal generations keep the first claim seen.
  if (members_.size() * 2 <= config_.hosts.size()) return;
  auto it = claims_.find(vm);
  if (it != claims_.end() && it->second.generation >= c.generation) return;
  if (it == claims_.end() || it->second.host != c.host) placed_ms_[vm] = now_ms;
  claims_[vm] = c;
  auto m = moves_.find(vm);
  if (m != moves_.end() && m->second == c.host) moves_.erase(m);  // arrived
}

const json& ClusterState::stats(const std::string& host) const {
  static const json kNone = json(json::value_t::discarded);
  auto it = stats_.find(host);
  return it == stats_.end() ? kNone : it->second;
}

bool ClusterState::OnMessage(const std::string& host, const std::string& payload, uint64_t received_ms) {
  if (members_.count(host)) heard_ms_[host] = std::max(heard_ms_[host], received_ms ? received_ms : now_ms);
  json j = json::parse(payload, nullptr, false);
  if (!j.is_object() || !config_.Host(host)) return false;  // only a host of the cluster speaks for itself
  // A member's message with a field of the wrong type is ignored, never an exception.
  try {
    return Apply(host, j);
  } catch (const json::exception&) {
    return false;
  }
}

bool ClusterState::Apply(const std::string& host, const json& j) {
  std::string type = j.value("t", "");
  if (type == "report") {
    // Read whole before anything is applied: a field of the wrong type anywhere in it (an
    // agent of another version) leaves the state as it was, not half a report applied.
    std::vector<Instance> list;
    for (const auto& i : j.value("instances", json::array())) {
      auto parsed = Instance::FromJson(i);
      if (!parsed) return false;
      list.push_back(std::move(*parsed));
    }
    // Claims the sender holds: each was agreed by a majority that it was part of. They keep
    // their reason (an owner restarted between its claim and acting on it carries on: promotes
    // after a failover, releases after an unprotected claim), except that a "start" claim
    // learned so says "report": a VM is booted afresh only on a claim seen agreed.
    std::vector<std::pair<std::string, Claim>> claims;
    for (const auto& c : j.value("claims", json::array())) {
      if (!c.is_object()) continue;
      const std::string vm = c.value("vm", ""), owner = c.value("host", "");
      const uint64_t generation = Unsigned(c, "generation");
      std::string why = c.value("why", "report");
      if (why == "start" || why.empty() || why.size() > 32) why = "report";
      if (config_.Vm(vm) && config_.Host(owner) && generation > 0) claims.emplace_back(vm, Claim{generation, owner, why});
    }
    std::vector<std::pair<std::string, Evacuation>> evacuations;
    for (const auto& e : j.value("evacuations", json::array())) {
      // A version that is not an unsigned integer (a negative one would read as a huge one,
      // a flag nothing could ever lift) or a flag that is not a boolean: the entry is ignored.
      if (!e.is_object() || !e.contains("seq") || !e["seq"].is_number_unsigned() || !e.contains("on") ||
          !e["on"].is_boolean()) {
        continue;
      }
      const std::string h = e.value("host", "");
      const uint64_t seq = e["seq"].get<uint64_t>();
      if (config_.Host(h) && seq > 0) evacuations.emplace_back(h, Evacuation{e["on"].get<bool>(), seq});
    }
    for (const auto& i : list) {
      if (i.primary() && config_.Vm(i.vm)) Accept(i.vm, Claim{i.generation, host, "report"});
    }
    for (const auto& [vm, c] : claims) Accept(vm, c);
    for (const auto& [h, e] : evacuations) MergeEvacuation(h, e.on, e.seq);
    reports_[host] = std::move(list);
    if (j.contains("stats") && j["stats"].is_object()) stats_[host] = j["stats"];
    fresh_.insert(host);
    return true;
  }
  if (type == "claim") {
    std::string vm = j.value("vm", "");
    if (!config_.Vm(vm)) return false;
    Claim c{Unsigned(j, "generation"), j.value("host", ""), j.value("why", "")};
    if (c.generation == 0 || !config_.Host(c.host)) return false;
    auto p = pending_claim.find(vm);
    if (p != pending_claim.end() && p->second <= c.generation) pending_claim.erase(p);
    Accept(vm, c);
    return true;
  }
  if (type == "protect") {
    std::string vm = j.value("vm", "");
    const std::string to = j.value("host", "");
    const uint64_t generation = Unsigned(j, "generation");
    // A request naming no host of the cluster, or no generation, would stand in for the last
    // real one (a waiting standby it does not name is ended): ignored.
    if (!config_.Vm(vm) || !config_.Host(to) || generation == 0) return false;
    protects_[vm] = {to, generation};
    return true;
  }
  if (type == "move") {
    std::string vm = j.value("vm", ""), to = j.value("to", "");
    if (!config_.Vm(vm)) return false;
    if (!j.value("on", true)) {
      moves_.erase(vm);
      return true;
    }
    if (!config_.Host(to)) return false;
    const Claim* c = claim(vm);
    if (c && c->host == to) return true;  // already there
    moves_[vm] = to;
    return true;
  }
  if (type == "evacuate") {
    std::string h = j.value("host", "");
    if (!config_.Host(h)) return false;
    if (j.contains("seq") && !j["seq"].is_number_unsigned()) return false;  // as in reports
    const uint64_t seq = j.value("seq", uint64_t{0});
    MergeEvacuation(h, j.value("on", true), seq ? seq : evacuation_seq(h) + 1);
    return true;
  }
  return false;
}

void ClusterState::MergeEvacuation(const std::string& host, bool on, uint64_t seq) {
  Evacuation& e = evacuations_[host];
  if (seq > e.seq || (seq == e.seq && on && !e.on)) e = Evacuation{on, seq};
}

const Claim* ClusterState::claim(const std::string& vm) const {
  auto it = claims_.find(vm);
  return it == claims_.end() ? nullptr : &it->second;
}

const std::vector<Instance>* ClusterState::report(const std::string& host) const {
  auto it = reports_.find(host);
  return it == reports_.end() ? nullptr : &it->second;
}

const Instance* ClusterState::instance(const std::string& host, const std::string& vm) const {
  const auto* r = report(host);
  if (!r) return nullptr;
  for (const auto& i : *r) {
    if (i.vm == vm) return &i;
  }
  return nullptr;
}

json ClusterState::ToJson() const {
  json hosts = json::array();
  for (const auto& h : config_.hosts) {
    json inst = json::array();
    if (const auto* r = report(h.name)) {
      for (const auto& i : *r) inst.push_back(i.ToJson());
    }
    hosts.push_back({{"name", h.name}, {"address", h.address}, {"member", live(h.name)},
                     {"evacuating", evacuating(h.name)}, {"instances", inst}, {"stats", stats(h.name).is_object() ? stats(h.name) : json(nullptr)}});
  }
  json vms = json::array();
  for (const auto& v : config_.vms) {
    const Claim* c = claim(v.name);
    json entry = {{"name", v.name}, {"generation", c ? c->generation : 0}, {"owner", c ? c->host : ""},
                  {"claimed_by", c ? c->why : ""}};
    if (c) {
      if (const Instance* i = instance(c->host, v.name); i && i->primary()) {
        const json ij = i->ToJson();
        entry["state"] = i->fenced ? "fenced" : ij["state"];
        entry["replication"] = ij["replication"];
        entry["standby_host"] = i->standby_host;
      }
    }
    if (const std::string* m = move(v.name)) entry["moving_to"] = *m;
    vms.push_back(entry);
  }
  return {{"members", members_}, {"quorate", quorate_}, {"complete", complete()}, {"hosts", hosts}, {"vms", vms}};
}

std::string ClusterState::ReportMessage(const std::string& host, const std::vector<Instance>& instances) {
  return ReportMessage(host, instances, json::object());
}

std::string ClusterState::ReportMessage(const std::string& host, const std::vector<Instance>& instances,
                                        const json& stats) {
  return ReportMessage(host, instances, stats, {});
}

std::string ClusterState::ReportMessage(const std::string& host, const std::vector<Instance>& instances,
                                        const json& stats, const std::map<std::string, Claim>& claims,
                                        const std::map<std::string, Evacuation>& evacuations) {
  json list = json::array();
  for (const auto& i : instances) list.push_back(i.ToJson());
  json known = json::array();
  for (const auto& [vm, c] : claims) {
    known.push_back({{"vm", vm}, {"generation", c.generation}, {"host", c.host}, {"why", c.why}});
  }
  json evac = json::array();
  for (const auto& [h, e] : evacuations) evac.push_back({{"host", h}, {"on", e.on}, {"seq", e.seq}});
  return json{{"t", "report"}, {"host", host}, {"instances", list}, {"stats", stats}, {"claims", known}, {"evacuations", evac}}
      .dump();
}

std::string ClusterState::MoveMessage(const std::string& vm, const std::string& to, bool on) {
  return json{{"t", "move"}, {"vm", vm}, {"to", to}, {"on", on}}.dump();
}

std::string ClusterState::ClaimMessage(const std::string& vm, const Claim& c) {
  return json{{"t", "claim"}, {"vm", vm}, {"generation", c.generation}, {"host", c.host}, {"why", c.why}}.dump();
}

std::string ClusterState::ProtectMessage(const std::string& vm, const std::string& host, uint64_t generation) {
  return json{{"t", "protect"}, {"vm", vm}, {"host", host}, {"generation", generation}}.dump();
}

std::string ClusterState::EvacuateMessage(const std::string& host, bool on, uint64_t seq) {
  json j = {{"t", "evacuate"}, {"host", host}, {"on", on}};
  if (seq) j["seq"] = seq;
  return j.dump();
}

}  // namespace ferry::ha
