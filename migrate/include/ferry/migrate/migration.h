// Live migration of a running Vm (pre-copy): the source side and its statistics.
//
// Migrate() connects to a `ferry incoming` destination, authenticates, streams RAM in rounds
// over N parallel streams while the guest runs, lets the ConvergenceController decide when to
// stop, copies the last dirty pages and all vCPU and device state while paused, and hands
// over with a two-phase commit: the destination first reports that it holds the complete state
// (Prepared), then the source commits and never runs the guest again.
//
// Outcomes:
//   ok                      the destination runs the VM; the source VM is paused for good and
//                           the caller stops it.
//   error (not Indeterminate) the migration failed before commit; the source VM runs on, with
//                           its throttle removed.
//   ErrorCode::kIndeterminate the commit was sent but its answer was lost: the destination may
//                           be running the VM. The source stays paused (never two copies);
//                           the operator decides (`ferry status` on the destination).
// Blocks the calling thread; `progress` is called from it and from a reporter thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"
#include "ferry/migrate/auth.h"
#include "ferry/migrate/convergence.h"
#include "ferry/migrate/page_codec.h"
#include "ferry/migrate/security.h"

namespace ferry::migrate {

// How the migration moves RAM (issue 20): pre-copy only; post-copy at once (the VM runs on the
// destination after a single pause that moves vCPU and device state, and pulls its RAM);
// or auto: pre-copy, switching to post-copy instead of throttling when the controller
// predicts that pre-copy cannot converge (or at postcopy_after_ms). One name/parse pair.
enum class MigrationMode : uint8_t { kPrecopy, kPostcopy, kAuto };
const char* MigrationModeName(MigrationMode m);
std::optional<MigrationMode> ParseMigrationMode(std::string_view name);

struct MigrateOptions {
  std::string to;                   // HOST:PORT of `ferry incoming`
  Security security;                // TLS (key or certificates), or plaintext
  std::string transport = "tcp";    // tcp | rdma
  uint32_t streams = 2;
  bool compress = true;             // zstd where it pays
  uint64_t xbzrle_cache_bytes = 64ull << 20;
  uint64_t bandwidth = 0;           // bytes/s over all streams; 0 = unlimited
  uint64_t io_timeout_ms = 20000;   // a peer silent this long is dead
  bool verify = false;              // have the destination's guest verify itself after resume
  uint64_t generation = 0;          // the VM's fencing token (HA); a destination expecting a newer one refuses
  MigrationMode mode = MigrationMode::kPrecopy;
  ConvergenceOptions convergence;   // mode kAuto sets its postcopy flag
};

// Post-copy's figures (MigrationStats::postcopy), as both ends saw them.
struct PostcopyFigures {
  bool used = false;             // the migration switched to post-copy
  std::string reason;            // why it switched
  double duration_ms = 0;        // destination running to every page there
  double background_ms = 0;      // sending every outstanding page
  uint64_t outstanding_pages = 0;  // not on the destination at the switchover
  uint64_t faults = 0;           // first touches served on demand
  uint64_t requested_pages = 0;  // pages sent on demand (faulting pages and their windows)
  uint64_t placed_pages = 0;     // pages that arrived in the background first
  double fault_p50_us = 0, fault_p99_us = 0, fault_max_us = 0;
  uint64_t held_frames = 0;      // network frames the guest sent that waited for completion
  uint64_t held_disk_bytes = 0;  // disk bytes it wrote that waited for completion
};

struct RoundStats {
  uint32_t round = 0;
  uint64_t pages = 0;       // processed (sent or found unchanged)
  uint64_t wire_bytes = 0;
  double ms = 0;
  uint64_t dirty_pages = 0; // found dirty at the round's end
  double dirty_mb_s = 0;
  double bandwidth_mb_s = 0;
  double predicted_downtime_ms = 0;
  uint32_t throttle = 0;
};

struct MigrationStats {
  double downtime_ms = 0;        // source pause to destination resume (source clock, incl. one trip back)
  double pause_ms = 0;           // requesting the pause to all vCPUs parked
  double drain_ms = 0;           // before the stop: waiting for the destination to land what is in flight
  double stop_copy_ms = 0;       // final pages + state sent and the destination prepared
  double final_harvest_ms = 0;   // its parts: the last harvest (while paused),
  double final_send_ms = 0;      //   sending the last dirty pages,
  double state_ms = 0;           //   saving and sending vCPU and device state,
  double prepare_wait_ms = 0;    //   the destination checking it all and building the VM
  double dest_resume_ms = 0;     // the destination's commit-to-running
  double guest_clock_gap_ms = 0; // the guest clock's view: last instruction here to first there
  double total_ms = 0;
  uint32_t rounds = 0;           // pre-copy rounds, the stop-and-copy round not included
  uint64_t wire_bytes = 0;
  uint64_t ram_bytes = 0;
  uint64_t pages_zero = 0, pages_unchanged = 0, pages_xbzrle = 0, pages_zstd = 0, pages_raw = 0;
  uint64_t final_pages = 0;      // sent while paused
  uint32_t max_throttle = 0;
  bool converged = false;
  bool verified = false;         // verification ran
  bool verify_passed = false;
  std::string verify_report;
  std::string destination;
  std::vector<RoundStats> per_round;
  std::string mode;              // MigrationModeName of the request
  PostcopyFigures postcopy;
};

struct Progress {
  std::string phase;          // "connect", "round N", "stop-and-copy", "commit"
  uint64_t sent_bytes = 0;    // on the wire so far
  uint64_t remaining_pages = 0;
  double rate_mb_s = 0;       // wire rate
  double dirty_mb_s = 0;
  double predicted_downtime_ms = 0;
  uint32_t throttle = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

Result<MigrationStats> Migrate(hypervisor::Vm& vm, const MigrateOptions& options, const ProgressFn& progress);

}  // namespace ferry::migrate
