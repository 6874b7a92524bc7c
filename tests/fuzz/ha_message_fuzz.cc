// libFuzzer target for what an HA agent takes from its group (ClusterState::OnMessage), and
// the decisions it then makes (Decide, PlanBalance). The input is a run of lines: a line's
// first byte picks its sender (a, b or c by name; other bytes a host of the cluster, one not
// in it, or none) or, from 0xf0 up, a view change (its low three bits the members); the rest
// is the message's JSON text (the seeds are one valid message of each kind). Whatever arrives:
//   - nothing throws (OnMessage, Decide and PlanBalance alike);
//   - a message refused (OnMessage false) changes nothing of the state;
//   - a VM's claimed generation never goes down, and its owner is a host of the cluster;
//   - a protect request standing names a host of the cluster and a generation;
//   - an evacuation flag's version never goes down;
//   - every action Decide asks for names a VM of the cluster and, where it names one, a host
//     of the cluster.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/ha/balance.h"
#include "ferry/ha/cluster_state.h"
#include "ferry/ha/config.h"

namespace {

using namespace ferry::ha;
using nlohmann::json;

void Check(bool ok, int line = __builtin_LINE()) {
  if (ok) return;
  std::fprintf(stderr, "ha_message_fuzz: check failed at line %d\n", line);
  std::abort();
}

const ClusterConfig& Config() {
  static const ClusterConfig config = [] {
    auto c = ClusterConfig::Parse(json::parse(R"({
      "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/fuzz-a","cpus":2,"mem_bytes":1073741824},
                {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/fuzz-b"},
                {"name":"c","nodeid":3,"address":"127.31.0.3","dir":"/tmp/fuzz-c"}],
      "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100},
              {"name":"v2","guest":"kvstore.elf","mem":"256M","primary":"b","backup":"c","port":7101}],
      "policy": {"max_cpu_pct": 60, "max_mem_pct": 60, "anti_affinity": [["kv", "v2"]]}})"));
    Check(c.ok());
    return *c;
  }();
  return config;
}

// What a message could change, as text.
std::string Seen(const ClusterState& s) {
  std::string out = s.ToJson().dump();
  for (const auto& v : Config().vms) {
    if (auto p = s.protect(v.name)) out += "|" + p->first + "/" + std::to_string(p->second);
    if (const Claim* c = s.claim(v.name)) out += "|" + c->why;
  }
  for (const auto& [host, e] : s.evacuations()) out += "|" + host + std::to_string(e.on) + std::to_string(e.seq);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ClusterConfig& config = Config();
  const std::vector<std::string> senders = {"a", "b", "c", "zz", ""};
  ClusterState s(config, "a");
  s.OnView({"a", "b", "c"}, true, 1000);
  std::map<std::string, uint64_t> generations, seqs;
  uint64_t now = 1000;
  const std::string input(reinterpret_cast<const char*>(data), size);
  size_t pos = 0;
  while (pos < input.size()) {
    size_t end = input.find('\n', pos);
    if (end == std::string::npos) end = input.size();
    const std::string line = input.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const uint8_t pick = static_cast<uint8_t>(line[0]);
    now += 100;
    s.now_ms = now;
    if (pick >= 0xf0) {  // a view change: the members are the low bits' hosts
      std::set<std::string> members;
      for (int h = 0; h < 3; ++h) {
        if (pick & (1 << h)) members.insert(config.hosts[h].name);
      }
      s.OnView(members, members.size() * 2 > config.hosts.size(), now);
      continue;
    }
    const std::string before = Seen(s);
    const std::string sender = pick >= 'a' && pick <= 'c' ? std::string(1, static_cast<char>(pick)) : senders[pick % senders.size()];
    const bool taken = s.OnMessage(sender, line.substr(1), now);
    if (!taken) Check(Seen(s) == before);
    for (const auto& v : config.vms) {
      if (const Claim* c = s.claim(v.name)) {
        Check(c->generation >= generations[v.name]);
        Check(config.Host(c->host) != nullptr);
        generations[v.name] = c->generation;
      }
    }
    for (const auto& v : config.vms) {
      if (auto p = s.protect(v.name)) Check(config.Host(p->first) != nullptr && p->second > 0);
    }
    for (const auto& [host, e] : s.evacuations()) {
      Check(config.Host(host) != nullptr);
      Check(e.seq >= seqs[host]);
      seqs[host] = e.seq;
    }
  }
  // The decisions on what was heard: whatever they are, about this cluster's VMs and hosts.
  std::vector<Instance> local;
  if (const auto* mine = s.report("a")) local = *mine;
  for (const Action& a : Decide(config, "a", s, local, {})) {
    Check(config.Vm(a.vm) != nullptr);
    Check(a.host.empty() || config.Host(a.host) != nullptr);
  }
  const BalancePlan plan = PlanBalance(config, s, now);
  for (const auto& m : plan.moves) {
    Check(config.Vm(m.vm) != nullptr && config.Host(m.from) != nullptr && config.Host(m.to) != nullptr);
  }
  return 0;
}
