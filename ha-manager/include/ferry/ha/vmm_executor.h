// VmmExecutor: the real Executor (executor.h). Each VM on this host is one child process,
// `ferry run` (primary) or `ferry standby`, started from this binary with its API socket at
// HOSTDIR/VM.sock and its output in HOSTDIR/VM.log. Children inherit no descriptor of the
// agent's (its API socket, Corosync's). Without a watchdog lease (config lease_ms 0) they die
// with the agent (PR_SET_PDEATHSIG); with one they run in a session of their own, hold the
// lease from their start (--lease-ms), have it renewed at every probe, and a restarted agent
// adopts them (Adopt(): found by their sockets, watched through a pidfd).
//
// Probing keeps one API connection per child for its whole life (re-opened only after a
// failure), so a host's agent costs each VMM one socket, not one per tick. It never waits on
// one VMM: every child is asked at once, answers are collected for at most kProbeWaitMs, and
// a question still unanswered stays out into the next probes until kProbeTimeoutMs (the
// child is reported as it last answered meanwhile, then as not answering, with how long it
// has been silent). So a hung VMM delays neither the agent nor its other VMMs' leases: asked
// one after another with a 1 s deadline each, every hung VMM had held up the agent's loop and
// every later VMM's lease renewal by a second. The one-shot commands the agent's thread sends
// (fence, unfence, release) wait kCommandWaitMs for a VMM that answers its probes, and only
// kProbeWaitMs for one that does not (CommandWaitMs).
//
// Threads: see executor.h; the children table is guarded by a mutex, and the long
// operations use connections of their own.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ferry/ha/executor.h"
#include "ferry/ha/load_sampler.h"
#include "ferry/vmhost/api_client.h"

namespace ferry::ha {

class VmmExecutor : public Executor {
 public:
  static constexpr uint64_t kProbeWaitMs = 100;      // a Probe() waits this long at most
  static constexpr uint64_t kProbeTimeoutMs = 1000;  // an unanswered question is given up then
  static constexpr int kCommandWaitMs = 3000;         // fence, unfence, release, answered
  static constexpr uint64_t kLogTailKept = 1u << 20;  // VM.log.1: the last MiB of a capped log

  // `exe` is the ferry binary the children run (/proc/self/exe in the agent).
  VmmExecutor(const ClusterConfig& config, const HostConfig& self, std::string exe = "/proc/self/exe");
  ~VmmExecutor() override;  // KillAll()

  Status StartPrimary(const VmSpec& v, uint64_t generation) override;
  Status StartStandby(const VmSpec& v, uint64_t generation, const std::string& primary) override;
  void Kill(const std::string& vm) override;
  std::vector<Ended> Reap() override;
  std::vector<std::string> Adopt() override;
  std::vector<Instance> Probe(bool renew_leases = true) override;
  nlohmann::json Stats() override;
  Status Replicate(const VmSpec& v, const HostConfig& to, uint64_t generation) override;
  Status StopReplication(const std::string& vm, bool keep_standby) override;
  Result<PromoteResult> Promote(const std::string& vm, uint64_t generation) override;
  Result<HandoverResult> Handover(const std::string& vm, uint64_t generation) override;
  Status Fence(const std::string& vm) override;
  Status Unfence(const std::string& vm) override;
  Status ReleaseOutput(const std::string& vm, uint64_t generation) override;

  // SIGKILLs every child and waits for each (the agent is ending).
  void KillAll();
  // vm's local process, if any.
  std::optional<pid_t> pid(const std::string& vm) const;
  // Connections the probes opened so far, over all children (a test's leak check).
  uint64_t probe_connects() const;

 private:
  struct Child {
    pid_t pid = -1;
    Role role = Role::kPrimary;
    uint64_t generation = 0;
    // The last answer to a probe: a probe that gets none reports it again, as not answering
    // (no phase or standby state), never the role and generation the child started with.
    std::optional<Instance> last;
    std::unique_ptr<vmhost::ApiConnection> api;  // the probe's; agent thread only
    int pidfd = -1;  // adopted (not our child): its end is seen here, not by waitpid
    // The probe's question out on `api` (agent thread only), since asked_ms: its status, then
    // its lease; answering: it answered since its last failure; answered_ms: when it last
    // answered (when it was started or adopted, before its first answer).
    enum class Asked : uint8_t { kNothing, kStatus, kLease } asked = Asked::kNothing;
    uint64_t asked_ms = 0;
    bool answering = false;
    uint64_t answered_ms = 0;
  };
  std::string Sock(const std::string& vm) const;
  std::string LogPath(const std::string& vm) const;  // its stdout and stderr (CapLog)
  int CommandWaitMs(const std::string& vm) const;
  void CapLog(const std::string& vm);  // config vm_log_max_mb
  Status Spawn(const VmSpec& v, Role role, uint64_t generation, std::vector<std::string> args);
  Instance Parse(const std::string& vm, const Child& child, const nlohmann::json& status);
  Instance NotAnswering(const std::string& vm, const Child& child);
  // One probe's answers, read into `c` (status) or counted (lease); the next question sent.
  void Answered(const std::string& vm, Child& c, const Result<nlohmann::json>& r, bool renew, uint64_t now_ms);
  void Ask(Child& c, Child::Asked what, uint64_t now_ms);  // the status, or the lease

  const ClusterConfig& config_;
  const HostConfig& self_;
  const std::string exe_;
  LoadSampler sampler_;  // agent thread only
  mutable std::mutex mu_;
  // vm -> (role, generation) a promotion or a new generation made it, until its next answer
  // (guarded by mu_: workers promote, the agent's thread probes).
  struct Told {
    Role role;
    uint64_t generation;
    uint64_t at_ms;  // when: an answer to a question asked before says what the VMM was
  };
  std::map<std::string, Told> told_;
  std::map<std::string, Child> children_;  // guarded by mu_ (api: agent thread only)
  uint64_t closed_connects_ = 0;           // guarded by mu_: probe connects of reaped children
};

}  // namespace ferry::ha
