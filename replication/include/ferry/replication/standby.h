// Standby: the receiving side of continuous replication (`ferry standby`). Holds a prepared,
// never-running copy of the primary's VM that is always exactly one whole checkpoint.
//
// Run() accepts one primary (authenticated like a migration source, begin with the
// replication flag), takes the initial sync straight into the replica, then applies each
// checkpoint only once it arrived whole and verified: pages and disk writes are staged while
// they arrive (double buffering), checked against the checkpoint's frame and page counts,
// then written into the replica's memory and disk image, its state kept, and the checkpoint
// acknowledged. A checkpoint cut off mid-transfer is discarded; the last committed one stays.
// Run() returns when the primary is gone (lost, or it ended replication).
//
// Promote() activates the replica from the last committed checkpoint: loads the state,
// starts the vCPUs (the NIC announces the guest's address) and hands the running VM over.
// The primary can also hand the VM over itself (a planned switchover): after a final
// checkpoint with its guest paused it sends `handover`; the standby activates that checkpoint
// at once and answers `handover-done`.
// Thread-safe: status() and Promote() from any thread while Run() runs on another.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"
#include "ferry/migrate/security.h"
#include "ferry/replication/states.h"

namespace ferry::replication {

struct StandbyOptions {
  std::string listen;              // HOST:PORT
  migrate::Security security;      // plaintext: loopback primaries only, unless insecure
  uint64_t accept_timeout_ms = 0;  // 0: wait for a primary forever
  uint64_t io_timeout_ms = 3000;   // a primary silent this long (after the sync) is lost
  uint64_t sync_timeout_ms = 60000;  // ... and during the initial sync
  uint64_t min_generation = 0;     // refuse a primary whose generation is older (HA fencing)
  hypervisor::ConsoleSink console;
  hypervisor::DeviceOverrides devices;  // this host's disk copy and TAP
};

struct StandbyStatus {
  StandbyState state = StandbyState::kWaiting;
  bool handed_over = false;      // promoted by the primary's handover (planned switchover)
  std::string primary;
  std::string error;             // why the primary was lost
  uint64_t generation = 0;
  uint64_t committed_epoch = 0;  // 0: no whole checkpoint yet (cannot be promoted)
  uint64_t discarded = 0;        // checkpoints cut off mid-transfer and thrown away
  double since_commit_ms = 0;    // age of the last committed checkpoint
  double apply_ms_p50 = 0;       // staged checkpoint into memory and disk
  uint64_t wire_bytes = 0;
  uint64_t disk_bytes = 0;       // disk writes applied
  uint32_t refused_peers = 0;
};

struct PromoteStats {
  uint64_t epoch = 0;
  uint64_t generation = 0;     // the replica's from now on
  double since_commit_ms = 0;  // how old the activated checkpoint was
  double promote_ms = 0;       // Promote() called to vCPUs running
};

class Standby {
 public:
  static Result<std::unique_ptr<Standby>> Listen(const StandbyOptions& options);
  ~Standby();
  std::string address() const;
  // Receives from one primary until it is gone; returns why (never Ok while replicating).
  Status Run();
  StandbyStatus status() const;
  // Activates the last committed checkpoint. Refused while a primary is still replicating
  // unless `force` (which cuts it off first: the operator takes responsibility for fencing
  // the old primary). Returns the running VM; the Standby is done after it.
  // The replica runs at `generation` afterwards (0: the primary's plus one; it must be newer).
  Result<std::unique_ptr<hypervisor::Vm>> Promote(bool force, uint64_t generation, PromoteStats* stats);
  // After a handover (status().handed_over): the running VM, once; null otherwise.
  std::unique_ptr<hypervisor::Vm> TakeHandedOver();
  // Any thread: stops listening and receiving; Run() returns.
  void Cancel();

  struct Impl;

 private:
  explicit Standby(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::replication
