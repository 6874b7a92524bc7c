// Agent: the HA agent of one host (`ferry ha agent` is a thin loop over it). It keeps a
// ClusterState from the group's views and messages, decides with Decide() (decide.cc), and
// carries the actions out through its Executor: short ones on the calling thread, long ones
// (replicate, stop replication, promote, hand over) on worker threads, one per VM at a time.
// It also keeps what an operator needs at 3 a.m.: events, and each owned VM's protection (how
// long it has been unprotected, the tries to re-protect it and the backoff between them).
//
// Nothing here touches Corosync or processes: the group is an interface (Group) and so is
// the host (Executor), so unit tests run whole clusters of agents in memory.
//
// Threads: every public method may be called from any thread (one mutex guards the state);
// the worker threads are joined by Shutdown() or the destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"
#include "ferry/ha/cluster_state.h"
#include "ferry/ha/config.h"
#include "ferry/ha/executor.h"

namespace ferry::ha {

class AgentMetrics;

// The closed process group the agents talk through (Corosync CPG in production): Send()
// delivers to every member, this one included, in one agreed order; QuorateNow() asks the
// quorum service afresh.
class Group {
 public:
  virtual ~Group() = default;
  virtual Status Send(const std::string& payload) = 0;
  virtual bool QuorateNow() = 0;
};

struct AgentOptions {
  uint64_t startup_grace_ms = 10000;  // then a never-started VM may be claimed without every host
  uint64_t claim_retry_ms = 3000;     // a claim that was not delivered is made again
  uint64_t protect_retry_ms = 5000;   // a protect request no standby came of is made again
  uint64_t report_every_ms = 1000;    // reports also go out at every change
  // Re-protection: after a failed try, the next waits backoff_min_ms, doubling to
  // backoff_max_ms; so a lost standby is replaced within backoff_max_ms plus a sync.
  uint64_t backoff_min_ms = 1000;
  uint64_t backoff_max_ms = 30000;
  uint64_t avoid_failed_host_ms = 300000;  // a host that failed a VM's standby is tried last this long
  uint64_t unprotected_warn_every_ms = 10000;  // an "unprotected" event this often while it lasts
  // Runs a long operation off the agent's thread (default: a joined worker thread). Tests
  // pass a queue they drain when they choose, to stop the world between any two steps.
  std::function<void(std::function<void()>)> run_async;
};

// One owned VM's protection, as status and metrics show it.
struct Protection {
  uint64_t unprotected_since_ms = 0;  // 0: protected (or not owned here)
  uint32_t attempts = 0;              // tries to re-protect since it was last protected
  uint64_t not_before_ms = 0;         // the next try waits until then
  std::string last_error;
};

class Agent {
 public:
  Agent(const ClusterConfig& config, const HostConfig& self, Executor& executor, Group& group, AgentOptions options,
        uint64_t now_ms, AgentMetrics* metrics = nullptr);
  ~Agent();  // Shutdown()
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // A view change (host names) and a message from `host`, both in the group's order.
  void OnView(const std::set<std::string>& members, bool quorate, uint64_t now_ms);
  void OnMessage(const std::string& host, const std::string& payload, uint64_t received_ms = 0);
  // The group is gone (this host's Corosync crashed or restarts): the agent counts itself
  // alone without quorum, so its primaries are fenced at the next Tick (the others fail them
  // over), and sends nothing until OnGroupRejoined(); the next view then comes by OnView.
  void OnGroupLost(const std::string& why, uint64_t now_ms);
  void OnGroupRejoined();
  // Reap, probe, report, decide and act, at now_ms (the agent's clock; the leader also runs
  // the placement policy).
  void Tick(uint64_t now_ms);
  // The agent's API: status, evacuate, move, balance.
  nlohmann::json Handle(const nlohmann::json& request);
  // Whether an agent's status answer counts `vm` protected (its own bookkeeping, not only its
  // VMM's word) and no worker of it is busy with the VM: a worker about to stop a replication
  // (a switch of standbys) leaves the VMM reporting "protected" meanwhile. What harnesses wait
  // for before they inject a fault (tests' AllProtected, AgentSimDrills).
  static bool CountsProtected(const nlohmann::json& status, const std::string& vm);
  // Waits for the workers in flight; no new ones start.
  void Shutdown();

  // For tests and status.
  std::set<std::string> busy() const;
  std::map<std::string, Protection> protection() const;
  std::vector<nlohmann::json> events() const;
  const ClusterState& state() const { return *state_; }  // agent thread only

 private:
  struct Workers;

  void Event(const std::string& kind, const std::string& vm, const std::string& detail,
             const nlohmann::json& extra = nlohmann::json::object());
  void Send(const std::string& payload);
  void Execute(const Action& a);
  void Worker(const std::string& vm, std::function<void()> fn);
  void TrackProtection(const std::vector<Instance>& local, uint64_t now_ms);
  // A try to give vm a standby on `host` failed: back off, and try other hosts first.
  void ReprotectFailed(const std::string& vm, const std::string& host, const std::string& why, uint64_t now_ms);
  nlohmann::json StatusJson() const;
  nlohmann::json HandleMove(const nlohmann::json& req);
  nlohmann::json HandleBalance(const nlohmann::json& req);
  void MaybeBalanceLocked(uint64_t now_ms);  // the leader's periodic placement check (balance.h)
  void SendMove(const std::string& vm, const std::string& from, const std::string& to, const std::string& why);

  // The hung-agent rule's periods (cluster_state.h, set_silence), in report periods.
  static constexpr uint64_t kSilenceReports = 3;      // others count this agent hung after
  static constexpr uint64_t kSelfSilenceReports = 2;  // it stops renewing leases after
  static constexpr uint64_t kDeliverySkewMs = 200;    // one message reaching two members apart
  static constexpr uint64_t kRefenceMs = 1000;         // an unanswered fence is sent again after

  const ClusterConfig& config_;
  const HostConfig& self_;
  Executor& executor_;
  Group& group_;
  const AgentOptions options_;
  AgentMetrics* const metrics_;  // may be null
  const uint64_t started_ms_;

  mutable std::mutex mu_;  // guards everything below
  std::unique_ptr<ClusterState> state_;
  std::vector<Instance> last_sent_;   // as last reported to the group
  std::vector<Instance> last_local_;  // as last probed (the status shows these)
  nlohmann::json last_stats_ = nlohmann::json::object();
  uint64_t last_report_ms_ = 0;
  uint64_t last_balance_ms_ = 0;
  uint64_t now_ms_ = 0;
  std::atomic<bool> group_lost_{false};  // OnGroupLost() until OnGroupRejoined()
  std::atomic<uint64_t> self_heard_ms_{0};  // when this agent's own message last came back
  bool renewing_ = true;                    // leases were renewed at the last tick
  uint64_t last_tick_end_ms_ = 0;  // Tick's thread only
  std::map<std::string, uint64_t> claim_ms_, protect_ms_;
  std::map<std::string, Protection> protection_;
  std::map<std::string, uint64_t> warned_ms_;  // vm -> last "unprotected" event
  std::map<std::string, uint64_t> fence_unanswered_ms_;  // vm -> when a fence to it failed
  std::set<std::string> busy_;
  std::deque<nlohmann::json> events_;
  std::unique_ptr<Workers> workers_;
  bool shut_down_ = false;
  bool adopted_ = false;  // Tick's thread only
};

}  // namespace ferry::ha
