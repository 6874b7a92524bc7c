#include "ferry/ha/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "ferry/ha/json_fields.h"

namespace ferry::ha {

using nlohmann::json;
using namespace prometheus;


Result<std::unique_ptr<AgentMetrics>> AgentMetrics::Start(const std::string& address, const std::string& host) {
  std::unique_ptr<AgentMetrics> m(new AgentMetrics());
  m->host_ = host;
  m->registry_ = std::make_shared<Registry>();
  Registry& r = *m->registry_;
  const Labels h = {{"host", host}};
  auto gauge = [&](const char* name, const char* help) { return &BuildGauge().Name(name).Help(help).Labels(h).Register(r); };
  auto counter = [&](const char* name, const char* help) { return &BuildCounter().Name(name).Help(help).Labels(h).Register(r); };
  auto histogram = [&](const char* name, const char* help) { return &BuildHistogram().Name(name).Help(help).Labels(h).Register(r); };
  m->quorate_ = gauge("ferry_cluster_quorate", "1 while this host's partition has quorum");
  m->members_ = gauge("ferry_cluster_members", "Hosts in this host's Corosync view");
  m->host_cpu_ = gauge("ferry_host_cpu_percent", "CPU use of this host's VMs, % of its cpus");
  m->host_mem_ = gauge("ferry_host_memory_used_bytes", "Memory of this host's VMs and standbys");
  m->host_bw_ = gauge("ferry_host_migration_bytes_per_second", "Replication and migration traffic sent by this host");
  m->vm_cpu_ = gauge("ferry_vm_cpu_percent", "A VM's CPU use, % of one CPU");
  m->vm_dirty_ = gauge("ferry_vm_dirty_pages_per_second", "Pages a VM dirties per second");
  m->vm_disk_ = gauge("ferry_vm_disk_bytes_per_second", "A VM's disk reads and writes");
  m->vm_net_ = gauge("ferry_vm_net_bytes_per_second", "A VM's network traffic, both ways");
  m->vm_lag_ = gauge("ferry_replication_lag_milliseconds", "Time since the standby acknowledged the last checkpoint's pause");
  m->moving_ = gauge("ferry_migration_in_progress", "1 while a VM is being live-migrated off this host");
  m->checkpoints_ = counter("ferry_replication_checkpoints_total", "Checkpoints the standby acknowledged");
  m->repl_bytes_ = counter("ferry_replication_bytes_total", "Bytes sent to standbys (initial syncs and checkpoints)");
  m->mig_bytes_ = counter("ferry_migration_bytes_total", "Bytes sent for live migrations (moves, evacuations)");
  m->migrations_ = counter("ferry_migrations_total", "Live migrations off this host that completed");
  m->failovers_ = counter("ferry_failovers_total", "VMs this host took over after their host was lost");
  m->fences_ = counter("ferry_fences_total", "Times this host fenced a guest for lack of quorum");
  m->pause_ = histogram("ferry_checkpoint_pause_seconds", "How long the guest stood still per checkpoint");
  m->lag_hist_ = histogram("ferry_checkpoint_lag_seconds", "Checkpoint pause to the standby's acknowledgement");
  m->downtime_ = histogram("ferry_migration_downtime_seconds", "Guest downtime of completed live migrations");
  m->unprotected_ = gauge("ferry_vm_unprotected_seconds", "How long a VM this host owns has run without a protected standby (0: protected)");
  m->reprotects_ = counter("ferry_reprotect_attempts_total", "Tries to give a VM this host owns a new standby after it lost one");
  m->fences_->Add({});
  try {
    m->exposer_ = std::make_unique<Exposer>(address, 1);
  } catch (const std::exception& e) {
    return InvalidArgument("cannot serve metrics on " + address + ": " + e.what());
  }
  m->exposer_->RegisterCollectable(m->registry_);
  return m;
}

AgentMetrics::~AgentMetrics() = default;

Gauge& AgentMetrics::G(Family<Gauge>* f, const std::string& vm) { return f->Add({{"vm", vm}}); }
Counter& AgentMetrics::C(Family<Counter>* f, const std::string& vm) { return f->Add({{"vm", vm}}); }

void AgentMetrics::Update(bool quorate, size_t members, const json& stats, const std::map<std::string, bool>& moving) {
  quorate_->Add({}).Set(quorate ? 1 : 0);
  members_->Add({}).Set(static_cast<double>(members));
  const json host = Field(stats, "host");
  host_cpu_->Add({}).Set(NumberField(host, "cpu_pct"));
  host_mem_->Add({}).Set(NumberField(host, "mem_used_bytes"));
  host_bw_->Add({}).Set(NumberField(host, "migration_bytes_per_s"));
  static const Histogram::BucketBoundaries kPause = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25};
  static const Histogram::BucketBoundaries kLag = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  json vms = Field(stats, "vms");
  if (!vms.is_object()) vms = json::object();
  for (const auto& [vm, v] : vms.items()) {
    G(vm_cpu_, vm).Set(NumberField(v, "cpu_pct"));
    G(vm_dirty_, vm).Set(NumberField(v, "dirty_pages_per_s"));
    G(vm_disk_, vm).Set(NumberField(v, "disk_bytes_per_s"));
    G(vm_net_, vm).Set(NumberField(v, "net_bytes_per_s"));
    G(vm_lag_, vm).Set(NumberField(v, "lag_ms"));
    auto mv = moving.find(vm);
    const bool is_moving = mv != moving.end() && mv->second;
    G(moving_, vm).Set(is_moving ? 1 : 0);
    Last& last = last_[vm];
    // A new replication (after a failover or a re-protection) counts again from 0.
    const uint64_t epochs = CountField(v, "epochs"), wire = CountField(v, "wire_bytes");
    const uint64_t d_epochs = epochs >= last.epochs ? epochs - last.epochs : epochs;
    const uint64_t d_wire = wire >= last.wire ? wire - last.wire : wire;
    last.epochs = epochs;
    last.wire = wire;
    C(checkpoints_, vm).Increment(static_cast<double>(d_epochs));
    C(repl_bytes_, vm).Increment(static_cast<double>(d_wire));
    Counter& mig = C(mig_bytes_, vm);
    if (is_moving) mig.Increment(static_cast<double>(d_wire));
    if (epochs < last.epoch_seen) last.epoch_seen = 0;  // replication restarted: epochs count from 1
    for (const auto& e : ArrayField(v, "recent")) {
      const uint64_t n = CountField(e, "epoch");
      if (n <= last.epoch_seen) continue;
      pause_->Add({}, kPause).Observe(NumberField(e, "pause_ms") / 1000);
      lag_hist_->Add({}, kLag).Observe(NumberField(e, "lag_ms") / 1000);
      last.epoch_seen = n;
    }
  }
}

void AgentMetrics::OnMigrated(const std::string& vm, double downtime_ms) {
  static const Histogram::BucketBoundaries kDowntime = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  C(migrations_, vm).Increment();
  downtime_->Add({}, kDowntime).Observe(downtime_ms / 1000);
}

void AgentMetrics::OnFailover(const std::string& vm) { C(failovers_, vm).Increment(); }
void AgentMetrics::OnFence() { fences_->Add({}).Increment(); }

void AgentMetrics::SetUnprotected(const std::string& vm, double seconds) { G(unprotected_, vm).Set(seconds); }

void AgentMetrics::OnReprotectAttempt(const std::string& vm) { C(reprotects_, vm).Increment(); }

}  // namespace ferry::ha
