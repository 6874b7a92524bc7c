// The API's "migrate" operation: runs migrate::Migrate() inside the VMM (which owns the guest
// memory) and streams its progress to the client as interim lines.
#include <atomic>
#include <cstdio>

#include "ferry/migrate/migration.h"
#include "key_hex.h"
#include "vmm_host.h"

namespace ferry::cli {

using nlohmann::json;

namespace {

std::atomic<bool> g_migrating{false};  // one migration per VMM at a time

json StatsJson(const migrate::MigrationStats& s) {
  json rounds = json::array();
  for (const auto& r : s.per_round) {
    rounds.push_back({{"round", r.round}, {"pages", r.pages}, {"wire_bytes", r.wire_bytes}, {"ms", r.ms},
                      {"dirty_pages", r.dirty_pages}, {"dirty_mb_s", r.dirty_mb_s}, {"bandwidth_mb_s", r.bandwidth_mb_s},
                      {"predicted_downtime_ms", r.predicted_downtime_ms}, {"throttle", r.throttle}});
  }
  return {{"ok", true},
          {"destination", s.destination},
          {"converged", s.converged},
          {"downtime_ms", s.downtime_ms},
          {"pause_ms", s.pause_ms},
          {"drain_ms", s.drain_ms},
          {"stop_copy_ms", s.stop_copy_ms},
          {"stop_copy_parts_ms", {{"harvest", s.final_harvest_ms}, {"send", s.final_send_ms}, {"state", s.state_ms},
                                  {"prepare", s.prepare_wait_ms}}},
          {"dest_resume_ms", s.dest_resume_ms},
          {"guest_pause_ms", s.guest_clock_gap_ms},
          {"total_ms", s.total_ms},
          {"rounds", s.rounds},
          {"bytes", s.wire_bytes},
          {"ram_bytes", s.ram_bytes},
          {"final_pages", s.final_pages},
          {"pages", {{"zero", s.pages_zero}, {"unchanged", s.pages_unchanged}, {"xbzrle", s.pages_xbzrle},
                     {"zstd", s.pages_zstd}, {"raw", s.pages_raw}}},
          {"throttle_max", s.max_throttle},
          {"verified", s.verified},
          {"verify_passed", s.verify_passed},
          {"verify_report", s.verify_report},
          {"per_round", rounds}};
}

}  // namespace

json HandleMigrate(hypervisor::Vm& vm, const json& req, const ApiEmit& emit) {
  auto error = [](const std::string& m) { return json{{"ok", false}, {"error", m}}; };
  migrate::MigrateOptions o;
  if (auto bad = ReadPeerFields(req, "migrate", &o)) return error(*bad);
  o.bandwidth = req.value("bandwidth", uint64_t{0});
  o.xbzrle_cache_bytes = req.value("xbzrle_cache", o.xbzrle_cache_bytes);
  o.verify = req.value("verify", false);
  o.generation = VmGeneration();
  o.io_timeout_ms = req.value("io_timeout_ms", o.io_timeout_ms);
  o.convergence.downtime_ms = req.value("downtime_ms", o.convergence.downtime_ms);
  o.convergence.deadline_ms = req.value("deadline_ms", o.convergence.deadline_ms);
  o.convergence.auto_converge = req.value("auto_converge", true);

  if (Replicating()) return error("this VM is being replicated: stop replication first (ferry replicate --stop)");
  if (g_migrating.exchange(true)) return error("a migration of this VM is already running");
  auto progress = [&emit](const migrate::Progress& p) {
    emit({{"progress", p.phase}, {"sent_bytes", p.sent_bytes}, {"remaining_pages", p.remaining_pages},
          {"rate_mb_s", p.rate_mb_s}, {"dirty_mb_s", p.dirty_mb_s}, {"predicted_downtime_ms", p.predicted_downtime_ms},
          {"throttle", p.throttle}});
  };
  auto r = migrate::Migrate(vm, o, progress);
  g_migrating = false;
  if (!r.ok()) {
    std::fprintf(stderr, "ferry: %s\n", r.status().message().c_str());
    json e = error(r.status().message());
    if (r.status().code() == ErrorCode::kIndeterminate) e["indeterminate"] = true;
    return e;
  }
  std::fprintf(stderr, "ferry: migrated to %s (downtime %.1f ms); this VMM stops\n", r->destination.c_str(),
               r->downtime_ms);
  vm.Stop();  // the destination runs the guest now; the reply is still delivered
  return StatsJson(*r);
}

}  // namespace ferry::cli
