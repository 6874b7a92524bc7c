// The destination side of a live migration: listens, authenticates the source, receives RAM
// on N parallel streams and the final state, builds the Vm, and starts it only when the source
// commits (PROTOCOL.md, "receiver state machine").
//
// Incoming owns the listener. Receive() blocks until a migration completed (the VM runs) or
// failed (nothing runs here; everything received is discarded). Connections are authenticated
// concurrently, each within a short deadline (PeerGate, accept.h): a peer that fails is refused
// and the listener waits on; a stranger that stays silent does not delay the real source. One
// thread calls Receive(); Cancel() from any.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"
#include "ferry/migrate/auth.h"
#include "ferry/migrate/security.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

class PeerGate;

struct IncomingOptions {
  std::string listen;              // HOST:PORT
  Security security;               // plaintext: loopback peers only, unless insecure
  uint64_t accept_timeout_ms = 0;  // 0: wait for a source forever
  uint64_t io_timeout_ms = 20000;
  uint64_t min_generation = 0;     // refuse a source whose VM generation is older (HA fencing)
  hypervisor::ConsoleSink console;
  hypervisor::DeviceOverrides devices;  // this host's disk and TAP, replacing the source's
  uint64_t postcopy_disk_hold_bytes = 256ull << 20;  // post-copy: disk writes held in memory (beyond: they wait)
};

struct IncomingStats {
  std::string source;
  uint64_t generation = 0;     // the source's
  uint64_t wire_bytes = 0;
  uint64_t pages = 0;          // page records applied
  double receive_ms = 0;       // Begin to Prepared
  double build_ms = 0;         // the received state loaded into the VM (built at Begin)
  double resume_ms = 0;        // Commit to running
  bool verified = false;
  bool verify_passed = false;
  uint32_t refused_peers = 0;  // failed authentication before this migration
  // Post-copy (the source switched over with pages to follow).
  bool postcopy = false;
  uint64_t postcopy_outstanding = 0;  // pages not here at the switchover
  double postcopy_ms = 0;             // commit to every page here and the source's end
  uint64_t postcopy_faults = 0, postcopy_fetched_pages = 0, postcopy_placed_pages = 0;
  double fault_p50_us = 0, fault_p99_us = 0;
  // Every page arrived but the source's end did not: the VM is paused and sealed with its
  // output and disk writes held (the source may have resumed); `resume --force` releases it.
  bool postcopy_unresolved = false;
};

struct Received {
  std::unique_ptr<hypervisor::Vm> vm;  // running
  IncomingStats stats;
};

class Incoming {
 public:
  static Result<std::unique_ptr<Incoming>> Listen(const IncomingOptions& options);
  ~Incoming();
  std::string address() const;  // what was bound, e.g. "127.0.0.1:4410"
  Result<Received> Receive();
  void Cancel();  // any thread: stops listening; a Receive waiting for a peer fails

 private:
  Incoming(const IncomingOptions& options, std::unique_ptr<Listener> listener);
  IncomingOptions options_;
  std::unique_ptr<Listener> listener_;
  std::mutex mu_;
  PeerGate* gate_ = nullptr;  // guarded by mu_: the running Receive()'s, for Cancel() to shut
};

}  // namespace ferry::migrate
