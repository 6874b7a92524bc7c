// Replicator: the primary's side of continuous replication (Remus-style). Keeps a standby
// (`ferry standby`, standby.h) one checkpoint behind the running guest.
//
// Start() connects and authenticates like a migration (control + N data streams, protocol
// v3 with the replication flag), then a thread of its own does the work: an initial sync
// (the disk image and live pre-copy rounds of RAM), then one checkpoint per epoch: pause,
// harvest the dirty log, copy the dirty pages into a staging copy, take the vCPU and device
// state and the disk journal, resume; then ship it all through the page encoders and streams
// while the guest runs, and wait for the standby's acknowledgement. Output commit: what the
// guest transmits in an epoch is held by the NIC until that epoch's checkpoint is
// acknowledged. The EpochController stretches epochs (and throttles) when shipping is slow.
//
// If the standby or the link fails, replication ends: held output is released, the throttle
// removed, and the guest runs on here, unprotected (status says why). Stop() ends it on
// purpose and tells the standby. Thread-safe: status() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"
#include "ferry/migrate/security.h"
#include "ferry/replication/epoch_controller.h"
#include "ferry/replication/states.h"

namespace ferry::replication {

struct ReplicateOptions {
  std::string to;  // HOST:PORT of `ferry standby`
  migrate::Security security;  // TLS (key or certificates), or plaintext
  std::string transport = "tcp";
  uint32_t streams = 2;
  bool compress = true;
  uint64_t xbzrle_cache_bytes = 64ull << 20;
  uint64_t io_timeout_ms = 3000;          // a standby silent this long is lost
  uint64_t disk_journal_bytes = 256ull << 20;  // disk writes per checkpoint, at most
  uint64_t generation = 0;                // fencing token (HA)
  // HA: when replication fails, keep holding the guest's output (the standby may have been
  // promoted) until the HA agent decides: ReleaseHeldOutput() (quorate, run on unprotected)
  // or fencing. Without it the output is released at once.
  bool hold_output_on_failure = false;
  // Caps the initial sync's data streams (bytes/s, 0 = unlimited), so re-protecting or moving
  // a VM leaves the network to others; checkpoints are never capped (lag is lost protection).
  uint64_t sync_bandwidth = 0;
  EpochOptions epochs;
};

struct EpochStats {
  uint64_t epoch = 0;
  double pause_ms = 0;     // the guest stood still
  double copy_ms = 0;      // of which: copying dirty pages into the staging copy
  uint64_t pages = 0;      // dirty pages in the checkpoint
  uint64_t hot_pages = 0;  // of which: left writable since the last, sent written or not
  uint64_t disk_bytes = 0; // disk writes in the checkpoint
  uint64_t wire_bytes = 0;
  double ship_ms = 0;      // resume to acknowledgement
  double lag_ms = 0;       // pause to acknowledgement: how far behind the standby was
  double interval_ms = 0;  // the interval planned for the next epoch
  uint32_t throttle = 0;
};

struct HandoverStats {
  uint64_t epoch = 0;        // the final checkpoint
  uint64_t generation = 0;   // the replica's, now running
  double downtime_ms = 0;    // the guest paused here to the replica running there (primary's clock)
  double final_ship_ms = 0;  // of which: the final checkpoint shipped and acknowledged
};

struct ReplicationStatus {
  ReplicationState state = ReplicationState::kConnecting;
  std::string standby;
  std::string error;  // why it failed
  uint64_t generation = 0;
  uint64_t epochs = 0;       // checkpoints acknowledged
  double sync_ms = 0;        // the initial sync
  uint64_t sync_disk_bytes = 0;
  uint64_t wire_bytes = 0;
  double interval_ms = 0;
  uint32_t throttle = 0;
  uint64_t lagging_epochs = 0;  // checkpoints that took longer to ship than their interval
  double behind_ms = 0;      // now minus the pause of the last acknowledged checkpoint
  double pause_ms_p50 = 0, pause_ms_p99 = 0, pause_ms_max = 0;
  double lag_ms_p50 = 0, lag_ms_max = 0, ship_ms_p50 = 0;
  bool output_held = false;  // failed with hold_output_on_failure: the guest's output waits for a decision
  // The initial sync as it runs (a live migration's progress): the round, the pages it sends
  // and the bytes sent of it so far, the wire rate since the sync began, and the rate the
  // guest dirtied pages during the previous round.
  uint32_t sync_round = 0;
  uint64_t sync_round_pages = 0, sync_round_sent_bytes = 0;
  double sync_rate_bytes_per_s = 0, sync_dirty_pages_per_s = 0;
  std::vector<EpochStats> recent;  // the last few epochs, oldest first
};

class Replicator {
 public:
  // Connects and authenticates; the initial sync and the epochs then run on a thread.
  static Result<std::unique_ptr<Replicator>> Start(hypervisor::Vm& vm, const ReplicateOptions& options);
  ~Replicator();  // Stop()
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // Blocks until the first checkpoint is acknowledged (the guest is protected), replication
  // failed, or timeout_ms passed.
  Status WaitProtected(uint64_t timeout_ms);
  // Ends replication (after the checkpoint in flight) and tells the standby; returns at once
  // if it already ended. Held output is released. With keep_standby, the standby is not told
  // (it sees its primary lost and keeps its last checkpoint) and the output stays held
  // (status().output_held) until a new replication's first acknowledgement on this VM, or
  // ReleaseHeldOutput(): so that checkpoint stays a valid fallback meanwhile.
  void Stop(bool keep_standby = false);
  // Planned switchover (HA evacuation): pauses the guest, ships a final checkpoint, and once
  // it is acknowledged tells the standby to run it at `generation`. On success the guest
  // stays paused here for good (the caller stops this VM); the replica runs there. If it fails
  // before the standby was told, the guest resumes here and replication has ended; if the
  // standby's answer is lost after it was told, the guest stays paused (kIndeterminate).
  Result<HandoverStats> Handover(uint64_t generation);
  // After a failure with hold_output_on_failure: lets the held output go (the HA agent found
  // this VM still the owner, quorate) and clears status().output_held. No-op otherwise.
  void ReleaseHeldOutput();
  bool running() const;
  ReplicationStatus status() const;

  struct Impl;

 private:
  explicit Replicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::replication
