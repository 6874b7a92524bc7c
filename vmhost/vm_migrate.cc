// The VM host's "migrate" request: runs migrate::Migrate() inside the VMM (which owns the
// guest memory) while the migration holds the VM, and streams its progress as interim lines.
#include <cstdio>

#include "ferry/migrate/migration.h"
#include "ferry/vmhost/vm_host.h"

namespace ferry::vmhost {

using nlohmann::json;

namespace {

json StatsJson(const migrate::MigrationStats& s) {
  json rounds = json::array();
  for (const auto& r : s.per_round) {
    rounds.push_back({{"round", r.round}, {"pages", r.pages}, {"wire_bytes", r.wire_bytes}, {"ms", r.ms},
                      {"dirty_pages", r.dirty_pages}, {"dirty_mb_s", r.dirty_mb_s}, {"bandwidth_mb_s", r.bandwidth_mb_s},
                      {"predicted_downtime_ms", r.predicted_downtime_ms}, {"throttle", r.throttle}});
  }
  const auto& p = s.postcopy;
  json postcopy = {{"used", p.used},
                   {"reason", p.reason},
                   {"ms", p.duration_ms},
                   {"background_ms", p.background_ms},
                   {"outstanding_pages", p.outstanding_pages},
                   {"faults", p.faults},
                   {"requested_pages", p.requested_pages},
                   {"placed_pages", p.placed_pages},
                   {"fault_p50_us", p.fault_p50_us},
                   {"fault_p99_us", p.fault_p99_us},
                   {"fault_max_us", p.fault_max_us},
                   {"held_frames", p.held_frames},
                   {"held_disk_bytes", p.held_disk_bytes}};
  return {{"ok", true},
          {"mode", s.mode},
          {"postcopy", postcopy},
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

json VmHost::Migrate(const MigrateRequest& r, const ApiEmit& emit) {
  hypervisor::Vm& v = *vm();
  migrate::MigrateOptions o;
  ApplyPeer(r.peer, &o);
  o.bandwidth = r.bandwidth;
  o.xbzrle_cache_bytes = r.xbzrle_cache;
  o.verify = r.verify;
  o.io_timeout_ms = r.io_timeout_ms;
  o.convergence.downtime_ms = r.downtime_ms;
  o.convergence.deadline_ms = r.deadline_ms;
  o.convergence.auto_converge = r.auto_converge;
  o.mode = r.mode;
  o.convergence.postcopy_after_ms = r.postcopy_after_ms;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kMigrate);
    if (!from.ok()) return ErrorReply(from.status());
    o.generation = generation();
  }
  auto progress = [&emit](const migrate::Progress& p) {
    emit({{"progress", p.phase}, {"sent_bytes", p.sent_bytes}, {"remaining_pages", p.remaining_pages},
          {"rate_mb_s", p.rate_mb_s}, {"dirty_mb_s", p.dirty_mb_s}, {"predicted_downtime_ms", p.predicted_downtime_ms},
          {"throttle", p.throttle}});
  };
  auto result = migrate::Migrate(v, o, progress);
  std::lock_guard control(control_mu_);
  if (!result.ok()) {
    std::fprintf(stderr, "ferry: %s\n", result.status().message().c_str());
    if (result.status().code() == ErrorCode::kIndeterminate) {
      (void)v.Seal("a migration's commit went unanswered");
      (void)lifecycle_.End(Event::kCommitUnknown);
    } else {
      EndHeld(Event::kDone);  // the source runs on (Migrate resumed it)
    }
    return ErrorReply(result.status());
  }
  // The destination runs the guest now: this copy never runs again.
  (void)v.Seal("migrated to " + result->destination);
  (void)lifecycle_.End(Event::kCommitted);
  std::fprintf(stderr, "ferry: migrated to %s (downtime %.1f ms); this VMM stops\n", result->destination.c_str(),
               result->downtime_ms);
  v.Stop();  // the reply is still delivered
  return StatsJson(*result);
}

}  // namespace ferry::vmhost
