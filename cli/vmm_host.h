// VmmHost: the VMM process around one Vm — serves its JSON API, forwards the guest console
// to stdout, turns SIGINT/SIGTERM into a clean stop, and reports how the guest ended.
// Used by `ferry run` and `ferry restore`. Owns the Vm and the ApiServer; Run() blocks.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "api_server.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::cli {

struct VmmOptions {
  std::string api_path;       // empty: no API
  bool verify_on_start = false;  // deliver a verify event before the first instruction
  bool already_started = false;  // the vCPUs run already (an incoming migration started them)
};

// Process exit codes shared by the VMM subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;       // a Ferry error (bad flag, bad file, KVM failure)
inline constexpr int kExitUsage = 2;       // command-line syntax
inline constexpr int kExitGuestCrash = 3;  // triple fault, panic, bad hypercall
inline constexpr int kExitIndeterminate = 4;  // a migration's commit went unanswered: the VM stays paused

// Prints "ferry: MESSAGE" on stderr and returns `code`: how a subcommand fails.
int Fail(const std::string& message, int code = kExitError);

// The guest console on stdout, one line at a time, flushed so pipes see it at once.
hypervisor::ConsoleSink StdoutConsole();

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

// Runs `vm` until it exits; returns the process exit code (the guest's own code if it shut
// down cleanly, kExitGuestCrash if it crashed).
int RunVmm(std::unique_ptr<hypervisor::Vm> vm, const VmmOptions& options);

// The API's request dispatch for a VM (exposed for tests).
nlohmann::json HandleApiRequest(hypervisor::Vm& vm, const nlohmann::json& request, const ApiEmit& emit);
// The "migrate" operation (api_migrate.cc): streams progress lines through `emit`, stops the
// VM once the destination runs it.
nlohmann::json HandleMigrate(hypervisor::Vm& vm, const nlohmann::json& request, const ApiEmit& emit);
// Replication on the primary (api_replicate.cc): "replicate" answers once the first
// checkpoint is acknowledged; "replicate_stop"; the status section (null if never replicated).
nlohmann::json HandleReplicate(hypervisor::Vm& vm, const nlohmann::json& request);
nlohmann::json HandleReplicateStop();
nlohmann::json ReplicationJson();
bool Replicating();
void StopReplication();  // before the VM goes away
// Planned switchover to the standby (api_replicate.cc, "handover"): on success the VM stops
// here, the replica runs there.
nlohmann::json HandleHandover(hypervisor::Vm& vm, const nlohmann::json& request);
// HA (api_ha.cc): this VM's generation (fencing token), fence/unfence, release_output,
// set_generation; the "ha" status section.
uint64_t VmGeneration();
void SetVmGeneration(uint64_t generation);
nlohmann::json HaJson();
nlohmann::json HandleHaRequest(hypervisor::Vm& vm, const std::string& op, const nlohmann::json& request);
// Waits for the guest to end; returns the process exit code (RunVmm's).
int AwaitVmExit(hypervisor::Vm& vm);

}  // namespace ferry::cli
