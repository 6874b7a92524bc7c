// PlanBalance(): anti-affinity first (a rule, not a preference), then CPU, then memory. Each
// planned move is applied to a simulated placement before the next is chosen, so a plan never
// overloads the host it relieves another onto.
#include "ferry/ha/balance.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "ferry/ha/json_fields.h"

namespace ferry::ha {
namespace {

using nlohmann::json;

struct HostLoad {
  double cpus = 0;          // 0: unknown, the CPU rule skips this host
  uint64_t mem_total = 0;   // 0: unknown
  double cpu = 0;           // sum of its VMs' CPU use, % of one CPU
  uint64_t mem = 0;         // sum of its VMs' memory
  std::vector<std::string> vms;
  double cpu_pct() const { return cpus > 0 ? cpu / cpus : 0; }
  double mem_pct() const { return mem_total > 0 ? 100.0 * mem / mem_total : 0; }
};

std::string Pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f%%", v);
  return b;
}

class Planner {
 public:
  Planner(const ClusterConfig& c, const ClusterState& s, uint64_t now) : config_(c), state_(s), now_(now) {}

  BalancePlan Run() {
    Load();
    const PlacementPolicy& p = config_.policy;
    for (const auto& group : p.anti_affinity) AntiAffinity(group);
    if (p.max_cpu_pct > 0) {
      for (auto& [name, h] : hosts_) Relieve(name, /*cpu=*/true);
    }
    if (p.max_mem_pct > 0) {
      for (auto& [name, h] : hosts_) Relieve(name, /*cpu=*/false);
    }
    return std::move(plan_);
  }

 private:
  void Load() {
    for (const auto& hc : config_.hosts) {
      if (!state_.live(hc.name) || state_.evacuating(hc.name)) continue;
      const json& s = state_.stats(hc.name);
      const json host = Field(s, "host");
      HostLoad h;
      h.cpus = hc.cpus > 0 ? hc.cpus : NumberField(host, "cpus");
      h.mem_total = hc.mem_bytes > 0 ? hc.mem_bytes : CountField(host, "mem_total_bytes");
      hosts_[hc.name] = h;
    }
    for (const auto& v : config_.vms) {
      const Claim* c = state_.claim(v.name);
      if (!c || !hosts_.count(c->host)) continue;
      const Instance* i = state_.instance(c->host, v.name);
      if (!i || !i->primary()) continue;
      const json& s = state_.stats(c->host);
      const json vm = Field(Field(s, "vms"), v.name.c_str());
      cpu_[v.name] = NumberField(vm, "cpu_pct");
      mem_[v.name] = v.mem_bytes;
      where_[v.name] = c->host;
      HostLoad& h = hosts_[c->host];
      h.cpu += cpu_[v.name];
      h.mem += v.mem_bytes;
      h.vms.push_back(v.name);
    }
  }

  bool Movable(const std::string& vm, std::string* why) const {
    if (state_.move(vm)) {
      *why = vm + " is already moving";
      return false;
    }
    uint64_t placed = state_.placed_ms(vm);
    if (placed && now_ < placed + static_cast<uint64_t>(config_.policy.settle_s * 1000)) {
      *why = vm + " was placed less than " + std::to_string(int(config_.policy.settle_s)) + " s ago";
      return false;
    }
    return true;
  }

  bool AntiAffine(const std::string& vm, const std::string& host) const {
    for (const auto& group : config_.policy.anti_affinity) {
      if (std::find(group.begin(), group.end(), vm) == group.end()) continue;
      for (const auto& other : hosts_.at(host).vms) {
        if (other != vm && std::find(group.begin(), group.end(), other) != group.end()) return true;
      }
    }
    return false;
  }

  // The host that takes vm with the lowest CPU use after, within every threshold.
  std::string Target(const std::string& vm, const std::string& from) const {
    const PlacementPolicy& p = config_.policy;
    std::string best;
    double best_pct = 0;
    for (const auto& [name, h] : hosts_) {
      if (name == from || AntiAffine(vm, name)) continue;
      HostLoad after = h;
      after.cpu += cpu_.at(vm);
      after.mem += mem_.at(vm);
      if (p.max_cpu_pct > 0 && after.cpus > 0 && after.cpu_pct() > p.max_cpu_pct) continue;
      if (p.max_mem_pct > 0 && after.mem_total > 0 && after.mem_pct() > p.max_mem_pct) continue;
      if (best.empty() || after.cpu_pct() < best_pct) {
        best = name;
        best_pct = after.cpu_pct();
      }
    }
    return best;
  }

  void Apply(const std::string& vm, const std::string& to, const std::string& why) {
    const std::string from = where_[vm];
    HostLoad& a = hosts_[from];
    a.vms.erase(std::find(a.vms.begin(), a.vms.end(), vm));
    a.cpu -= cpu_[vm];
    a.mem -= mem_[vm];
    HostLoad& b = hosts_[to];
    b.vms.push_back(vm);
    b.cpu += cpu_[vm];
    b.mem += mem_[vm];
    where_[vm] = to;
    moved_.insert(vm);
    plan_.moves.push_back({vm, from, to, why + " (" + to + " " + Pct(b.cpu_pct()) + " CPU after)"});
  }

  void AntiAffinity(const std::vector<std::string>& group) {
    std::map<std::string, std::vector<std::string>> by_host;
    for (const auto& vm : group) {
      if (where_.count(vm)) by_host[where_[vm]].push_back(vm);
    }
    for (const auto& [host, vms] : by_host) {
      for (size_t k = 1; k < vms.size(); ++k) {
        const std::string& vm = vms[k];
        std::string why;
        if (!Movable(vm, &why)) {
          plan_.notes.push_back(vm + " shares " + host + " with " + vms[0] + " (anti-affine), but " + why);
          continue;
        }
        std::string to = Target(vm, host);
        if (to.empty()) {
          plan_.notes.push_back(vm + " shares " + host + " with " + vms[0] + " (anti-affine): no other host can take it");
          continue;
        }
        Apply(vm, to, vm + " and " + vms[0] + " are anti-affine and share " + host);
      }
    }
  }

  void Relieve(const std::string& host, bool cpu) {
    const PlacementPolicy& p = config_.policy;
    const double limit = cpu ? p.max_cpu_pct : p.max_mem_pct;
    auto load = [&] { return cpu ? hosts_[host].cpu_pct() : hosts_[host].mem_pct(); };
    const char* what = cpu ? "CPU" : "memory";
    for (size_t round = 0; round < config_.vms.size() && load() > limit; ++round) {
      // The least that brings the host under its limit, else the biggest: fewest moves.
      std::vector<std::string> vms = hosts_[host].vms;
      auto size = [&](const std::string& vm) { return cpu ? cpu_[vm] : static_cast<double>(mem_[vm]); };
      std::sort(vms.begin(), vms.end(), [&](const auto& a, const auto& b) { return size(a) < size(b); });
      const double total = cpu ? hosts_[host].cpus : static_cast<double>(hosts_[host].mem_total);
      std::string pick, blocked;
      for (const auto& vm : vms) {
        std::string why;
        if (moved_.count(vm) || !Movable(vm, &why)) {
          if (!why.empty()) blocked = why;
          continue;
        }
        if (Target(vm, host).empty()) continue;
        pick = vm;
        if (total > 0 && load() - 100.0 * size(vm) / total <= limit) break;
      }
      const std::string over = host + " " + what + " " + Pct(load()) + " > " + Pct(limit);
      if (pick.empty()) {
        plan_.notes.push_back(over + ": " + (blocked.empty() ? "no other host has room for any of its VMs" : blocked));
        return;
      }
      Apply(pick, Target(pick, host), over);
    }
  }

  const ClusterConfig& config_;
  const ClusterState& state_;
  const uint64_t now_;
  std::map<std::string, HostLoad> hosts_;
  std::map<std::string, double> cpu_;
  std::map<std::string, uint64_t> mem_;
  std::map<std::string, std::string> where_;
  std::set<std::string> moved_;
  BalancePlan plan_;
};

}  // namespace

json BalancePlan::ToJson() const {
  json m = json::array();
  for (const auto& x : moves) m.push_back({{"vm", x.vm}, {"from", x.from}, {"to", x.to}, {"why", x.why}});
  return {{"moves", m}, {"notes", notes}};
}

BalancePlan PlanBalance(const ClusterConfig& config, const ClusterState& state, uint64_t now_ms) {
  return Planner(config, state, now_ms).Run();
}

}  // namespace ferry::ha
