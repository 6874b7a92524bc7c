// Vm: one running paravirtual guest — its memory, vCPU threads, devices and clock.
//
// Lifecycle: Boot() (from an ELF) or FromState() (from a snapshot or migration) creates a
// stopped VM; Start() launches the vCPU threads; Pause()/Resume() stop and restart all
// vCPUs at an instruction boundary (pending I/O completed first); SaveState() is legal only
// while paused; WaitForExit() blocks until the guest shuts down, crashes or is stopped.
// All public methods are thread-safe (the API server, vCPU threads and the CLI call in).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/hypervisor/device_state.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/hypervisor/vcpu_state.h"

namespace ferry::hypervisor {

class Console;
class KvmDirtyLog;
class PvClock;
class Vcpu;
class VmCore;

struct VmConfig {
  uint64_t mem_bytes = 256ull << 20;
  uint32_t vcpus = 1;
  std::string guest_path;  // informational once booted
  std::string guest_args;  // "key=value" words for the guest
  // Dirty tracking mode, fixed at creation: 0 = KVM's dirty bitmap, else per-vCPU dirty
  // rings of this many entries (a power of two). Not part of a snapshot.
  uint32_t dirty_ring_entries = 0;
  DeviceConfig devices;
};

// Everything but RAM that a snapshot or migration carries.
struct VmState {
  VmConfig config;
  std::vector<VcpuState> vcpus;
  ConsoleState console;
  ClockState clock;
  BlockState block;
  NetState net;
  std::string guest_report;  // the guest's last status report, so status survives a restore
};

enum class RunState { kCreated, kRunning, kPaused, kShutdown, kCrashed, kStopped };
const char* RunStateName(RunState s);

struct VmExit {
  RunState state = RunState::kStopped;
  int exit_code = 0;        // from the guest's shutdown hypercall
  std::string reason;       // crash or panic description
};

// The last status line a guest reported (FERRY_HC_REPORT), parsed into key=value fields.
struct GuestReport {
  uint64_t seq = 0;         // 0: nothing reported yet
  uint64_t host_time_ns = 0;
  std::string text;
  std::map<std::string, std::string> fields;
};

struct PauseStats {
  uint64_t latency_ns = 0;  // request to all vCPUs parked
};

// The PV devices this VM has on this host, and their counters.
struct DeviceReport {
  bool has_disk = false;
  std::string disk_path;
  uint64_t disk_sectors = 0;
  BlockStats block;
  bool has_nic = false;
  std::string tap;
  std::array<uint8_t, 6> mac{};
  uint32_t guest_ip = 0;  // as learned from the guest's frames; 0: not yet
  NetStats net;
};

// A random locally administered unicast MAC (02:fe:xx:xx:xx:xx).
std::array<uint8_t, 6> GenerateMac();

using ConsoleSink = std::function<void(std::string_view line)>;

class Vm {
 public:
  static Result<std::unique_ptr<Vm>> Boot(const VmConfig& config, ConsoleSink sink);
  static Result<std::unique_ptr<Vm>> FromState(const VmState& state, GuestMemory memory, ConsoleSink sink);
  // FromState in two steps, so a migration destination builds the VM (KVM VM, vCPUs, memory
  // slot, device backends) while RAM is still arriving, and only loads the state in the
  // downtime: Prepare() with the announced config, then LoadState() once, before Start().
  static Result<std::unique_ptr<Vm>> Prepare(const VmConfig& config, GuestMemory memory, ConsoleSink sink);
  Status LoadState(const VmState& state);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  Status Start();
  Result<PauseStats> Pause();
  Status Resume();
  Result<VmState> SaveState();  // requires kPaused
  // Stops the vCPUs for good (the VM exits with kStopped).
  void Stop();
  // Holds the vCPUs: pauses them (if running) and refuses every later Start()/Resume() with
  // `why` until Unseal(). A fenced VM and a migrated source are sealed, so no caller (an API
  // request, a replicator's checkpoint) can run them by mistake. Seal and Resume are
  // serialized, so a resume racing a seal either lands before it or is refused.
  Result<PauseStats> Seal(const std::string& why);
  // Seals a paused VM for a hand-off to another host, unless it is sealed already (fenced):
  // then false, and the caller must not hand it over. Atomic with Seal(): a fence lands
  // either before (refusing the hand-off) or after (the VM is gone from here anyway).
  bool SealForHandOff(const std::string& why);
  void Unseal();
  bool sealed() const;
  // Asks the guest to verify itself / to shut down cleanly (events in the shared page).
  // Returns the new verify sequence number the guest will see.
  uint64_t RequestVerify();
  void RequestGuestStop();
  VmExit WaitForExit();
  // Like WaitForExit but gives up after timeout_ms; returns false on timeout.
  bool WaitForExitFor(uint64_t timeout_ms, VmExit* exit);

  RunState state() const;
  GuestReport LastReport() const;
  DeviceReport Devices() const;
  std::string LastConsoleLine() const;
  uint64_t GuestNs() const;
  // KVM's dirty-page logs for guest RAM (the mechanism dirtylog/ builds on).
  KvmDirtyLog& dirty_log();
  // Throttles vCPU `index` (or every vCPU, for index < 0): it is held off the CPU for
  // `percent` (0..99) of every 10 ms period. Migration uses this to force convergence.
  Status SetThrottle(int index, uint32_t percent);
  uint32_t throttle(uint32_t index) const;
  // Replication's hooks (replication/). Output commit: while buffering, frames the guest
  // transmits are held per epoch; SealOutput() closes the current epoch (call it while
  // paused, at a checkpoint) and returns its number, ReleaseOutput(e) lets every frame of
  // epochs <= e leave, StopOutputBuffering() releases all. No NIC: all are no-ops. The
  // gratuitous ARPs a migration destination sends from Start() are held like the guest's
  // frames: start buffering before Start().
  void StartOutputBuffering();
  uint64_t SealOutput();
  void ReleaseOutput(uint64_t epoch);
  void StopOutputBuffering();
  // Drops every held frame unsent and stops buffering for good: every frame the guest sends
  // later, and every pending announcement, is dropped too. For a post-copy destination that
  // gives up (the source takes the VM back): none of its output may ever leave.
  void DiscardOutput();
  // Disk journal: while on, every completed guest write is recorded for the next checkpoint
  // (TakeDiskJournal, while paused). No disk: an empty journal.
  void StartDiskJournal(uint64_t cap_bytes);
  Result<std::vector<DiskWrite>> TakeDiskJournal();
  void StopDiskJournal();
  // Post-copy's disk overlay (BlockDevice::StartOverlay): while on, guest writes are held in
  // memory, not written to the image the source shares. Past `cap_bytes` a writing vCPU
  // blocks (and cannot pause) until CommitDiskOverlay (the writes go to the image, made
  // durable) or DiscardDiskOverlay (they are dropped and every later write fails). Start it
  // before Start(); destroying the Vm discards it. No disk: no-ops, Ok.
  void StartDiskOverlay(uint64_t cap_bytes);
  Status CommitDiskOverlay();
  void DiscardDiskOverlay();
  const VmConfig& config() const { return config_; }
  GuestMemory& memory() { return memory_; }
  uint64_t boot_host_ns() const { return created_ns_; }

 private:
  friend class VmCore;
  Vm(VmConfig config, GuestMemory memory, ConsoleSink sink);

  VmConfig config_;
  GuestMemory memory_;
  uint64_t created_ns_ = 0;
  std::unique_ptr<VmCore> core_;  // KVM handles, vCPUs, devices, run-state machine
  mutable std::mutex gate_mu_;    // serializes Start/Resume with Seal/Unseal
  std::string sealed_why_;        // guarded by gate_mu_; empty: not sealed
};

// The guest's answer to verify request `target` (from RequestVerify): memcheck reports
// verify_seq once every vCPU has finished a full pass for it; passed means verdict=ok and no
// verify errors. An error if the guest does not report verification, ends, or does not
// answer within timeout_ms. Polls the guest's report; any thread.
struct Verification {
  bool passed = false;
  GuestReport report;
};
Result<Verification> AwaitVerification(Vm& vm, uint64_t target, uint64_t timeout_ms);

}  // namespace ferry::hypervisor
