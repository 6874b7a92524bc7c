// AgentMetrics: an HA agent's Prometheus metrics (prometheus-cpp), served in the text format
// at http://ADDR:PORT/metrics (the host's "metrics" in the cluster config): quorum and
// membership, per-VM load, replication counters and per-checkpoint histograms, live
// migrations (moves and evacuations: bytes while they run, count and downtime histogram when
// they end), failovers and fences. Update() and the On*() calls come from the agent's thread;
// the exporter's own threads only read.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace prometheus {
class Exposer;
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace ferry::ha {

class AgentMetrics {
 public:
  // Binds the exporter; an address that cannot be bound is an error.
  static Result<std::unique_ptr<AgentMetrics>> Start(const std::string& address, const std::string& host);
  ~AgentMetrics();

  // Each tick: the cluster view and this host's LoadSampler stats; `moving` lists the VMs
  // this host owns that are being live-migrated away now.
  void Update(bool quorate, size_t members, const nlohmann::json& stats, const std::map<std::string, bool>& moving);
  void OnMigrated(const std::string& vm, double downtime_ms);
  void OnFailover(const std::string& vm);
  void OnFence();
  // Protection of a VM this host owns: seconds without a protected standby (0 when protected),
  // and each try to re-protect it.
  void SetUnprotected(const std::string& vm, double seconds);
  void OnReprotectAttempt(const std::string& vm);

 private:
  AgentMetrics() = default;
  prometheus::Gauge& G(prometheus::Family<prometheus::Gauge>* f, const std::string& vm);
  prometheus::Counter& C(prometheus::Family<prometheus::Counter>* f, const std::string& vm);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Gauge>*quorate_, *members_, *host_cpu_, *host_mem_, *host_bw_;
  prometheus::Family<prometheus::Gauge>*vm_cpu_, *vm_dirty_, *vm_disk_, *vm_net_, *vm_lag_, *moving_, *unprotected_;
  prometheus::Family<prometheus::Counter>*checkpoints_, *repl_bytes_, *mig_bytes_, *migrations_, *failovers_, *fences_, *reprotects_;
  prometheus::Family<prometheus::Histogram>*pause_, *lag_hist_, *downtime_;
  struct Last {
    uint64_t epochs = 0, wire = 0, epoch_seen = 0;
  };
  std::map<std::string, Last> last_;  // vm -> counters already exported
  std::string host_;
};

}  // namespace ferry::ha
