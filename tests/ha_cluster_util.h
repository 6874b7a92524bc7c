// Helpers for tests of the HA manager on a TestCluster: 3 hosts with `ferry ha agent`
// running on each and kvstore VMs in the HA config, `ferry ha status` from the tests, and
// the agents' and VMMs' logs for failure messages.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "test_cluster.h"

namespace ferry::e2e {

struct Cluster {
  std::unique_ptr<TestCluster> tc;
  std::string config;
  std::vector<std::unique_ptr<Process>> agents;
};

// A 3-host cluster (Corosync token `token_ms`) with agents running and `vms` kvstore VMs (kv0
// on h0 backed by h1, kv1 on h0 backed by h2); `edit` may change the HA config before the
// agents start. Returns false with *skip set where it cannot run (not root, no KVM, no Corosync).
bool StartCluster(Cluster* c, int vms, std::string* skip, const std::function<void(nlohmann::json&)>& edit = {},
                  int token_ms = 300);
// Starts (or restarts, after a drill killed it) host i's agent.
void StartAgent(Cluster* c, int i);

nlohmann::json HaStatus(const Cluster& c, const std::string& host = "");
nlohmann::json VmOf(const nlohmann::json& status, const std::string& vm);
bool AllProtected(const Cluster& c, int vms, int timeout_ms);
std::string Logs(const Cluster& c);

}  // namespace ferry::e2e

#define START_CLUSTER(c, vms, ...)                                 \
  ::ferry::e2e::Cluster c;                                         \
  {                                                                \
    std::string skip;                                              \
    if (!StartCluster(&c, vms, &skip, ##__VA_ARGS__)) GTEST_SKIP() << skip; \
  }
