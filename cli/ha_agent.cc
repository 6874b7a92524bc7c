// `ferry ha agent`: the thin loop around ha::Agent (ha-manager/agent.h). It joins the
// cluster's Corosync process group, feeds the agent its views and messages, ticks it ten
// times a second, and serves the agent's API on HOSTDIR/agent.sock. When Corosync goes away
// it tells the agent it is alone without quorum and rejoins when Corosync is back.
#include "ha_agent.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "cli_util.h"
#include "ferry/base/clock.h"
#include "ferry/ha/agent.h"
#include "ferry/ha/membership.h"
#include "ferry/ha/metrics.h"
#include "ferry/ha/vmm_executor.h"

namespace ferry::cli {

using nlohmann::json;

std::string AgentSocket(const ha::HostConfig& host) { return host.dir + "/agent.sock"; }

namespace {

// Corosync's group for the agent. Membership is single-threaded, and the agent sends from
// its API and worker threads too, so every call goes through one mutex; views and messages
// that Dispatch() delivers are queued and handed to the agent after it, outside that mutex
// (the agent's own lock is taken while it sends: the two must never nest the other way).
class CorosyncGroup : public ha::Group {
 public:
  struct Delivery {
    bool is_view = false;
    ha::View view;      // is_view
    uint32_t node = 0;  // else: a message
    std::string payload;
  };

  Status Join(const std::string& name) {
    ha::Membership::Callbacks cb;
    cb.on_view = [this](const ha::View& v) { queue_.push_back(Delivery{true, v, 0, {}}); };
    cb.on_message = [this](uint32_t node, const std::string& payload) {
      queue_.push_back(Delivery{false, {}, node, payload});
    };
    auto m = ha::Membership::Join(name, cb);
    if (!m.ok()) return m.status();
    std::lock_guard lock(mu_);
    m_ = std::move(m).value();
    return Status::Ok();
  }
  // Corosync went away (crashed, restarted): forget its handles; Join() again when it is back.
  void Drop() {
    std::lock_guard lock(mu_);
    m_.reset();
    queue_.clear();
  }
  bool connected() {
    std::lock_guard lock(mu_);
    return m_ != nullptr;
  }
  int fd() const { return m_->fd(); }
  uint32_t local_nodeid() const { return m_->local_nodeid(); }
  Status Dispatch(std::vector<Delivery>* out) {
    std::lock_guard lock(mu_);
    if (!m_) return Status(ErrorCode::kIo, "not connected to Corosync");
    Status st = m_->Dispatch();
    out->swap(queue_);
    queue_.clear();
    return st;
  }
  Status Send(const std::string& payload) override {
    std::lock_guard lock(mu_);
    if (!m_) return Status(ErrorCode::kIo, "not connected to Corosync (it is restarting or gone)");
    return m_->Send(payload);
  }
  bool QuorateNow() override {
    std::lock_guard lock(mu_);
    return m_ && m_->QuorateNow();
  }

 private:
  std::mutex mu_;
  std::unique_ptr<ha::Membership> m_;
  std::vector<Delivery> queue_;  // filled inside Dispatch(), under mu_
};

}  // namespace

int RunHaAgent(const ha::ClusterConfig& config, const std::string& config_path, double wait_corosync_s) {
  std::atomic<bool> stop{false};
  SignalWatcher signals([&] { stop = true; });
  const uint64_t started = MonotonicMs();
  const uint64_t wait_ms = static_cast<uint64_t>(wait_corosync_s * 1000);
  CorosyncGroup group;
  Status joined = group.Join("ferry-ha-" + config.name);
  for (bool said = false; !joined.ok() && !stop && MonotonicMs() - started < wait_ms;) {
    if (!said) std::fprintf(stderr, "ferry ha agent: waiting up to %.0f s for Corosync (%s)\n", wait_ms / 1000.0, joined.message().c_str());
    said = true;
    ::usleep(200000);
    joined = group.Join("ferry-ha-" + config.name);
  }
  if (!joined.ok()) return Fail(joined.message());
  const ha::HostConfig* self = config.HostByNode(group.local_nodeid());
  if (!self) return Fail("this node's Corosync id " + std::to_string(group.local_nodeid()) + " is not in " + config_path);
  std::unique_ptr<ha::AgentMetrics> metrics;
  if (!self->metrics.empty()) {
    auto exporter = ha::AgentMetrics::Start(self->metrics, self->name);
    if (!exporter.ok()) return Fail(exporter.status().message());
    metrics = std::move(exporter).value();
  }
  ::mkdir(self->dir.c_str(), 0755);
  ha::VmmExecutor executor(config, *self);
  // The agent's clock: silence, absence, retries and backoff are durations, so a monotonic one
  // (a wall-clock step forward made every host look silent and fenced the primaries; a step back
  // held failover back by its size). Events keep wall-clock stamps (Agent::Event).
  ha::Agent agent(config, *self, executor, group, ha::AgentOptions{}, MonotonicMs(), metrics.get());
  auto api = ApiServer::Start(AgentSocket(*self), [&](const json& r, const ApiEmit&) { return agent.Handle(r); });
  if (!api.ok()) return Fail(api.status().message());
  std::fprintf(stderr, "ferry ha agent: host %s (node %u) in cluster %s; API on %s\n", self->name.c_str(),
               group.local_nodeid(), config.name.c_str(), AgentSocket(*self).c_str());
  int code = kExitOk;
  std::vector<CorosyncGroup::Delivery> delivered;
  uint64_t next_join_ms = 0;
  while (!stop) {
    if (!group.connected()) {
      // Corosync is gone (crashed, or restarting). This host counts as cut off meanwhile: the
      // agent has fenced its primaries (no quorum) and the others fail them over, as in a
      // partition. It rejoins when Corosync is back and goes on as a partitioned host would.
      if (MonotonicMs() >= next_join_ms) {
        next_join_ms = MonotonicMs() + 500;
        if (group.Join("ferry-ha-" + config.name).ok()) {
          if (group.local_nodeid() != self->nodeid) {
            Fail("Corosync came back as node " + std::to_string(group.local_nodeid()) + ", not " +
                 std::to_string(self->nodeid) + " as before");
            code = kExitError;
            break;
          }
          agent.OnGroupRejoined();
        }
      }
      if (!group.connected()) {
        ::usleep(100000);
        agent.Tick(MonotonicMs());
        continue;
      }
    }
    pollfd p{group.fd(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      Status st = group.Dispatch(&delivered);
      for (auto& d : delivered) {
        if (d.is_view) {
          std::set<std::string> members;
          for (uint32_t id : d.view.members) {
            if (const auto* h = config.HostByNode(id)) members.insert(h->name);
          }
          agent.OnView(members, d.view.quorate, MonotonicMs());
        } else if (const auto* h = config.HostByNode(d.node)) {
          agent.OnMessage(h->name, d.payload, MonotonicMs());
        }
      }
      if (!st.ok()) {
        group.Drop();
        agent.OnGroupLost("lost Corosync (" + st.message() + "): no quorum until it is back", MonotonicMs());
      }
    }
    agent.Tick(MonotonicMs());
  }
  (*api)->Stop();
  executor.KillAll();
  agent.Shutdown();
  return code;
}

}  // namespace ferry::cli
