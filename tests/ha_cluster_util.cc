#include "ha_cluster_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ferry/ha/agent.h"

namespace ferry::e2e {

using nlohmann::json;

// A 3-host cluster with agents running and `vms` kvstore VMs (kv0 on h0 backed by h1, kv1 on
// h0 backed by h2), each protected. Skips (returns false) where it cannot run: not root, no
// Corosync, or VMs in the config and no KVM.
bool StartCluster(Cluster* c, int vms, std::string* skip, const std::function<void(json&)>& edit, int token_ms) {
  if (geteuid() != 0) {
    *skip = "needs root (network namespaces)";
    return false;
  }
  ClusterOptions o;
  o.token_ms = token_ms;
  auto tc = TestCluster::Create(3, o);
  if (!tc.ok()) {
    *skip = tc.status().message();
    return false;
  }
  c->tc = std::move(tc).value();
  TestCluster& t = *c->tc;
  c->config = t.WriteHaConfig(vms);
  if (edit) {
    std::ifstream in(c->config);
    json cfg = json::parse(in);
    edit(cfg);
    std::ofstream(c->config) << cfg.dump(2);
  }
  std::ifstream in(c->config);
  if (!json::parse(in)["vms"].empty() && !HaveKvm()) {  // agents alone need no KVM
    *skip = "no usable /dev/kvm";
    c->tc.reset();
    return false;
  }
  c->agents.resize(3);
  for (int i = 0; i < 3; ++i) StartAgent(c, i);
  return true;
}

void StartAgent(Cluster* c, int i) {
  // Each start logs to its own files: a restarted agent's log does not hide its predecessor's.
  static int starts = 0;
  c->agents[i] = std::make_unique<Process>(c->tc->In(i, {FerryBin(), "ha", "agent", "--config", c->config}),
                                           c->tc->host_dir(i) + "/agent-" + std::to_string(starts++));
}

json HaStatus(const Cluster& c, const std::string& host) {
  std::vector<std::string> args = {"ha", "status", "--config", c.config, "--json"};
  if (!host.empty()) args.insert(args.end(), {"--host", host});
  auto r = RunFerry(args, c.tc->dir() + "/status", 10000);
  return r.code == 0 ? LastJsonLine(r.out) : json();
}

json VmOf(const json& status, const std::string& vm) {
  if (!status.is_object()) return json::object();
  for (const auto& v : status["cluster"]["vms"]) {
    if (v.value("name", "") == vm) return v;
  }
  return json::object();
}

bool AllProtected(const Cluster& c, int vms, int timeout_ms) {
  return WaitUntil(
      [&] {
        json s = HaStatus(c);
        for (int k = 0; k < vms; ++k) {
          // Protected and serving: a fenced primary's replication may still read "protected".
          const std::string name = "kv" + std::to_string(k);
          const json v = VmOf(s, name);
          if (v.value("replication", "") != "protected" || v.value("state", "") != "running") return false;
          // And so counted by its owner's agent, which is not busy with it: a worker about to
          // stop the replication (a switch of standbys) leaves the VMM reporting "protected"
          // meanwhile, and a drill started then finds the VM unprotected (AgentSimDrills waits
          // the same way).
          if (!ha::Agent::CountsProtected(HaStatus(c, v.value("owner", "")), name)) return false;
        }
        return true;
      },
      timeout_ms);
}

std::string Logs(const Cluster& c) {
  std::string out;
  for (size_t i = 0; i < c.agents.size(); ++i) {
    out += "--- agent h" + std::to_string(i) + "\n" + c.agents[i]->Stderr();
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(c.tc->host_dir(i), ec)) {
      const std::string vm = f.path().stem();
      if (f.path().extension() != ".log") continue;
      std::ifstream in(f.path());
      std::string line, text;
      while (std::getline(in, line)) {
        if (line.rfind("ferry", 0) == 0) text += line + "\n";  // the VMM's own lines, not the guest's
      }
      if (!text.empty()) out += "--- h" + std::to_string(i) + " " + vm + ".log\n" + text;
    }
  }
  return out;
}

}  // namespace ferry::e2e
