// The VMM processes built on VmHost: `ferry run`/`restore` (RunVm), `ferry incoming`
// (RunIncoming) and `ferry standby` (RunStandby). Each binds its API socket before anything
// else (so a bad --api fails before a migration is accepted or a replica is built), turns
// SIGINT/SIGTERM/SIGHUP into a clean stop, serves the API while the VM lives, and says how
// the VM ended. Called from the process's main thread, once.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "ferry/hypervisor/vm.h"
#include "ferry/migrate/incoming.h"
#include "ferry/replication/standby.h"

namespace ferry::vmhost {

// Blocks SIGINT/SIGTERM/SIGHUP in every thread started after it and, on one of them, calls
// `on_signal` once from its own thread. Construct it before any other thread starts.
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void()> on_signal);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  sigset_t set_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// How a VMM process ended: an error before or instead of running a VM, the VM's exit, or
// neither (a standby whose primary stopped replication on purpose).
struct HostOutcome {
  Status error;
  std::optional<hypervisor::VmExit> exit;
};

struct RunOptions {
  std::string api_path;         // empty: no API
  bool verify_on_start = false; // deliver a verify event before the first instruction
  uint64_t generation = 0;
  uint64_t lease_ms = 0;        // the HA agent's watchdog lease from the start (0: none)
};

HostOutcome RunVm(std::unique_ptr<hypervisor::Vm> vm, const RunOptions& options);
// Listens (options.listen), receives one migration, then runs the VM like RunVm.
HostOutcome RunIncoming(const migrate::IncomingOptions& options, const std::string& api_path);
HostOutcome RunStandby(std::unique_ptr<replication::Standby> standby, const std::string& api_path, uint64_t lease_ms = 0);

}  // namespace ferry::vmhost
