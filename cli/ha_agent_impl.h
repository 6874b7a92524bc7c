// The HA agent's internals (ha_agent.h is the entry point): one Agent per host, its state
// shared by the main loop (ha_agent.cc: membership, probing, deciding, acting) and the API
// thread (ha_agent_api.cc: status, evacuate, move, balance), all under mu_.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/ha/balance.h"
#include "ferry/ha/cluster_state.h"
#include "ferry/ha/config.h"
#include "ferry/ha/membership.h"
#include "ha_metrics.h"
#include "ha_stats.h"

namespace ferry::cli {

using nlohmann::json;
using ha::Action;
using ha::Instance;

struct Child {
  pid_t pid = -1;
  std::string role;  // primary | standby (as launched)
  uint64_t generation = 0;
  uint64_t started_ms = 0;
};

class Agent {
 public:
  Agent(const ha::ClusterConfig& config, const std::string& config_path, double wait_corosync_s)
      : config_(config), config_path_(config_path), wait_corosync_ms_(static_cast<uint64_t>(wait_corosync_s * 1000)) {}
  int Run();

 private:
  void OnView(const ha::View& v);
  void Tick();
  void Reap();
  std::vector<Instance> Probe();
  void Execute(const Action& a);
  void Send(const std::string& payload);
  // Logs and keeps an event (the console's history reads them); `extra` adds fields.
  void Event(const std::string& kind, const std::string& vm, const std::string& detail, const json& extra = json::object());
  void Worker(const std::string& vm, std::function<void()> fn);
  pid_t Spawn(const std::string& vm, std::vector<std::string> args);
  std::string Sock(const std::string& vm) const { return self_->dir + "/" + vm + ".sock"; }
  json Handle(const json& req);
  json HandleMove(const json& req);
  json HandleBalance(const json& req);
  void MaybeBalance(uint64_t now_ms);  // the leader's periodic policy check
  void SendMove(const ha::PlannedMove& m);  // a balancing move: logged, then sent

  const ha::ClusterConfig& config_;
  const std::string config_path_;
  const uint64_t wait_corosync_ms_;
  const ha::HostConfig* self_ = nullptr;
  std::unique_ptr<ha::Membership> membership_;
  std::unique_ptr<ha::ClusterState> state_;
  std::map<std::string, Child> children_;  // vm -> its VMM or standby process
  std::vector<Instance> last_sent_;
  uint64_t last_report_ms_ = 0;
  uint64_t started_ms_ = 0;
  std::map<std::string, uint64_t> claim_ms_, protect_ms_;
  std::unique_ptr<LoadSampler> sampler_;
  std::unique_ptr<AgentMetrics> metrics_;  // null when the host config names no metrics address
  uint64_t last_balance_ms_ = 0;

  std::mutex mu_;  // guards everything above against the API thread, and busy_/events_
  std::set<std::string> busy_;
  std::deque<json> events_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
};

}  // namespace ferry::cli
