// The API's replication operations on the primary: "replicate" starts a Replicator inside the
// VMM (which owns the guest memory) and answers once the guest is protected; "replicate_stop"
// ends it. Status carries the replication's state and per-epoch statistics.
#include <cstdio>
#include <mutex>

#include "ferry/replication/replicator.h"
#include "key_hex.h"
#include "vmm_host.h"

namespace ferry::cli {

using nlohmann::json;

namespace {

std::mutex g_mu;
std::unique_ptr<replication::Replicator> g_replicator;  // guarded by g_mu; kept after it ends, for status

json EpochJson(const replication::EpochStats& e) {
  return {{"epoch", e.epoch}, {"pause_ms", e.pause_ms}, {"copy_ms", e.copy_ms}, {"pages", e.pages},
          {"disk_bytes", e.disk_bytes}, {"wire_bytes", e.wire_bytes}, {"ship_ms", e.ship_ms},
          {"lag_ms", e.lag_ms}, {"interval_ms", e.interval_ms}, {"throttle", e.throttle}};
}

}  // namespace

json ReplicationStatusJson(const replication::ReplicationStatus& s) {
  json recent = json::array();
  for (const auto& e : s.recent) recent.push_back(EpochJson(e));
  return {{"role", "primary"}, {"state", s.state}, {"standby", s.standby}, {"error", s.error},
          {"generation", s.generation}, {"epochs", s.epochs}, {"sync_ms", s.sync_ms},
          {"sync_disk_bytes", s.sync_disk_bytes}, {"wire_bytes", s.wire_bytes}, {"interval_ms", s.interval_ms},
          {"throttle", s.throttle}, {"lagging_epochs", s.lagging_epochs}, {"behind_ms", s.behind_ms},
          {"pause_ms_p50", s.pause_ms_p50}, {"pause_ms_p99", s.pause_ms_p99}, {"pause_ms_max", s.pause_ms_max},
          {"lag_ms_p50", s.lag_ms_p50}, {"lag_ms_max", s.lag_ms_max}, {"ship_ms_p50", s.ship_ms_p50},
          {"output_held", s.output_held}, {"recent", recent},
          {"sync", {{"round", s.sync_round}, {"round_pages", s.sync_round_pages}, {"round_sent_bytes", s.sync_round_sent_bytes},
                    {"rate_bytes_per_s", s.sync_rate_bytes_per_s}, {"dirty_pages_per_s", s.sync_dirty_pages_per_s}}}};
}

bool Replicating() {
  std::lock_guard lock(g_mu);
  return g_replicator && g_replicator->running();
}

json ReplicationJson() {
  std::lock_guard lock(g_mu);
  if (!g_replicator) return nullptr;
  return ReplicationStatusJson(g_replicator->status());
}

void StopReplication() {
  std::lock_guard lock(g_mu);
  if (g_replicator) g_replicator->Stop();
}

json HandleReplicate(hypervisor::Vm& vm, const json& req) {
  auto error = [](const std::string& m) { return json{{"ok", false}, {"error", m}}; };
  replication::ReplicateOptions o;
  if (auto bad = ReadPeerFields(req, "replicate", &o)) return error(*bad);
  o.io_timeout_ms = req.value("io_timeout_ms", o.io_timeout_ms);
  o.generation = req.value("generation", VmGeneration());
  o.hold_output_on_failure = req.value("hold_on_failure", false);
  o.sync_bandwidth = req.value("sync_bandwidth", uint64_t{0});
  o.epochs.interval_ms = req.value("interval_ms", o.epochs.interval_ms);
  o.epochs.max_interval_ms = req.value("max_interval_ms", o.epochs.max_interval_ms);
  o.epochs.throttle = req.value("throttle", true);
  if (o.epochs.interval_ms < 1 || o.epochs.interval_ms > 60000) return error("interval_ms must be 1..60000");
  if (o.epochs.max_interval_ms < o.epochs.interval_ms) o.epochs.max_interval_ms = o.epochs.interval_ms;
  uint64_t wait_ms = req.value("wait_ms", uint64_t{300000});

  replication::Replicator* r;
  {
    std::lock_guard lock(g_mu);
    if (g_replicator && g_replicator->running()) return error("this VM is already being replicated");
    auto started = replication::Replicator::Start(vm, o);
    if (!started.ok()) return error(started.status().message());
    g_replicator = std::move(started).value();
    r = g_replicator.get();
  }
  // The replicator is never replaced while running, so `r` stays valid while we wait.
  if (Status st = r->WaitProtected(wait_ms); !st.ok()) {
    json e = error("replication to " + o.to + " did not protect the VM: " + st.message());
    e["replication"] = ReplicationStatusJson(r->status());
    return e;
  }
  json out = {{"ok", true}};
  out["replication"] = ReplicationStatusJson(r->status());
  return out;
}

json HandleReplicateStop() {
  std::lock_guard lock(g_mu);
  if (!g_replicator || !g_replicator->running()) return {{"ok", false}, {"error", "this VM is not being replicated"}};
  g_replicator->Stop();
  return {{"ok", true}, {"replication", ReplicationStatusJson(g_replicator->status())}};
}

}  // namespace ferry::cli

namespace ferry::cli {

json HandleHandover(hypervisor::Vm& vm, const json& req) {
  uint64_t generation = req.value("generation", VmGeneration() + 1);
  if (generation <= VmGeneration()) {
    return {{"ok", false}, {"error", "a handover must raise the generation (it is " + std::to_string(VmGeneration()) + ")"}};
  }
  replication::Replicator* r;
  {
    std::lock_guard lock(g_mu);
    if (!g_replicator || !g_replicator->running()) {
      return {{"ok", false}, {"error", "this VM is not being replicated: there is no standby to hand it to"}};
    }
    r = g_replicator.get();
  }
  auto h = r->Handover(generation);
  if (!h.ok()) {
    json e = {{"ok", false}, {"error", h.status().message()}};
    if (h.status().code() == ErrorCode::kIndeterminate) e["indeterminate"] = true;
    return e;
  }
  std::fprintf(stderr, "ferry: handed over to the standby at generation %llu (downtime %.1f ms); this VMM stops\n",
               static_cast<unsigned long long>(h->generation), h->downtime_ms);
  vm.Stop();
  return {{"ok", true}, {"epoch", h->epoch}, {"generation", h->generation}, {"downtime_ms", h->downtime_ms},
          {"final_ship_ms", h->final_ship_ms}};
}

}  // namespace ferry::cli
