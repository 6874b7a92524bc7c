// ClusterState: what one HA agent knows about the cluster, and Decide(): what it does about
// it. Pure logic (no processes, no sockets): the agent (cli/ha_agent.cc) feeds it Corosync
// views and group messages and carries out the actions; unit tests feed it by hand.
//
// The protocol over the closed process group (every message delivered to every member in
// the same order):
//   report   {host, instances}: each agent's VMs (primaries and standbys), sent after every
//            view change, whenever what decisions read of them changes (Instance::Differs),
//            and once a second, with the counters that move at every checkpoint.
//   claim    {vm, generation, host, why}: "host runs vm at generation". The first claim of a
//            generation higher than any seen wins, everywhere at once (agreed order): this is
//            the fencing token. A report showing a primary of a higher generation counts as
//            its claim (a host that was cut off learns the new owner that way).
//   protect  {vm, host, generation}: the owner asks host to hold a standby for vm.
//   evacuate {host, on}: no VM may run or be protected on host.
// An agent acts only while its partition is quorate and it holds a report from every member
// sent since the last view change; a host without quorum fences its primaries.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/ha/config.h"
#include "ferry/replication/states.h"
#include "ferry/vmhost/lifecycle.h"

namespace ferry::ha {

// Which end of a VM an instance is.
enum class Role : uint8_t { kPrimary, kStandby };
const char* RoleName(Role r);
std::optional<Role> ParseRole(std::string_view name);

// One VMM or standby on one host, as its agent last probed it. States are the lifecycle's
// and the replication's enums; names appear only at the JSON edge (ToJson / FromJson).
struct Instance {
  std::string vm;
  Role role = Role::kPrimary;
  std::optional<vmhost::Phase> phase;                         // primary: nullopt until its VMM answers
  std::optional<replication::StandbyState> standby_state;     // standby: nullopt until it answers
  uint64_t generation = 0;   // primary: the VM's; standby: the oldest it accepts
  bool fenced = false;
  std::optional<replication::ReplicationState> replication;   // primary: nullopt if it never replicated
  std::string standby_host;  // primary: the host it replicates to
  bool output_held = false;  // primary: replication failed and output waits for the agent
  uint64_t committed = 0;    // standby: the last whole checkpoint
  uint64_t epochs = 0;       // primary: checkpoints acknowledged
  uint64_t tx_frames = 0;
  uint64_t silent_ms = 0;    // how long its VMM has not answered its agent's probes (0: it does)

  bool primary() const { return role == Role::kPrimary; }
  bool standby() const { return role == Role::kStandby; }
  // A primary whose guest runs (running or replicating, not fenced or paused).
  bool Runs() const { return primary() && phase && vmhost::GuestRuns(*phase); }
  // Whether this comes from an answer of its VMM's (a phase or a standby state), not from
  // what it last said or was started as (Instance::NotAnswering).
  bool Answered() const { return phase.has_value() || standby_state.has_value(); }
  // A primary whose replication is under way (connecting, syncing or protected).
  bool Replicating() const { return primary() && replication && replication::ReplicationActive(*replication); }
  bool ReplicationIs(replication::ReplicationState s) const { return primary() && replication == s; }
  // Whether anything a decision reads differs: every field but the counters (epochs,
  // tx_frames, silent_ms; committed only as none or some).
  bool Differs(const Instance& o) const;
  bool StandbyIs(replication::StandbyState s) const { return standby() && standby_state == s; }

  // "state" is the phase's name ("running" for every phase whose guest runs, "starting"
  // before the VMM answers, "not-answering" once silent) or the standby's state;
  // "replication" is "" if never.
  nlohmann::json ToJson() const;
  // Unknown names parse as "not answering yet"; a missing or unknown role, or a field of the
  // wrong type, is nullopt (the report is malformed).
  static std::optional<Instance> FromJson(const nlohmann::json& j);
  // A VMM that gave no usable answer, as an executor reports it: what it last answered (else
  // `role` and `generation`, what it was started as), not answering (no phase or standby
  // state), and as what this agent's own promote or set_generation made it since (`told`,
  // if not older). Never the role and generation it started with once it has answered: a
  // promoted standby reported so looked like a standby of the previous generation, and the
  // others promoted their replica beside it.
  static Instance NotAnswering(const std::string& vm, const std::optional<Instance>& last, Role role, uint64_t generation,
                               const std::optional<std::pair<Role, uint64_t>>& told);
};

struct Claim {
  uint64_t generation = 0;
  std::string host;
  std::string why;  // start, failover, handover, report, unprotected, reclaim
};

struct Action {
  enum Kind {
    kClaim,           // send claim {vm, generation, host=self, why}
    kStartPrimary,    // boot vm here at generation
    kStartStandby,    // hold a standby here accepting generation from `host` (the owner)
    kPromote,         // promote the local standby to generation
    kReplicate,       // replicate the local primary to host
    kStopReplication, // stop replicating (its standby's host left, or is being evacuated): the
                      // standby keeps its replica and the output stays held, released only at
                      // a new generation (a cut-off standby never hears that it should end)
    kSwitchStandby,   // make-before-break: leave the old standby its replica (output held),
                      // replicate to the new one, waiting on `host`; the first acknowledgement
                      // there releases the output
    kProtect,         // send protect {vm, host, generation}
    kHandover,        // hand the local primary over to its standby at generation
    kReleaseOutput,   // replication failed while quorate: let held output go
    kFence,           // no quorum: stop the guest
    kUnfence,         // quorum back and still the owner
    kKill,            // a stale or useless local instance
  };
  Kind kind;
  std::string vm;
  std::string host;
  uint64_t generation = 0;
  std::string why;
};
const char* ActionName(Action::Kind k);

class ClusterState {
 public:
  ClusterState(const ClusterConfig& config, std::string self);

  // A view change: the members (host names) and quorum. Reports must be heard again.
  void OnView(const std::set<std::string>& members, bool quorate, uint64_t now_ms = 0);
  // How long `host` has been gone (0: it is live, or was never seen leave): out of the view,
  // or silent (below) since the last moment it could still have renewed its VMMs' leases.
  uint64_t absent_ms(const std::string& host, uint64_t now_ms) const;
  uint64_t now_ms = 0;  // the agent's clock at this decision
  // A group message (JSON text) from `host`, received at `received_ms` (0: now_ms);
  // malformed ones are ignored (returns false).
  bool OnMessage(const std::string& host, const std::string& payload, uint64_t received_ms = 0);
  // The hung-agent rule, for clusters with a watchdog lease: a member whose agent sends
  // nothing for `silence_ms` is hung (SIGSTOP, a livelock) or cut off from the group's
  // messages though Corosync keeps it in the view. It counts as gone: not live, not awaited
  // by complete(), and absent since its last message plus `renew_bound_ms`, the latest it
  // can have renewed a lease (an agent renews only while its own messages come back within
  // `self_silence_ms`: Agent::Tick; `skew_ms` allows for one message reaching two members
  // apart), so a failover still waits the lease, by which its VMMs have fenced themselves.
  // Without a lease a hung agent's VMMs serve on: off (0).
  void set_silence(uint64_t silence_ms, uint64_t self_silence_ms, uint64_t skew_ms) {
    silence_ms_ = silence_ms;
    self_silence_ms_ = self_silence_ms;
    renew_bound_ms_ = self_silence_ms + skew_ms;
  }
  bool silent(const std::string& host) const;
  // This agent's own messages stopped coming back (self_silence_ms): it is the one cut off,
  // so it judges nobody silent and decides nothing (its leases run out meanwhile). Not for
  // self_silence_ms after Stalled(): the agent itself did not run (Agent::Tick).
  bool cut_off() const;
  void Stalled(uint64_t now) { stall_grace_until_ms_ = now + self_silence_ms_; }

  bool quorate() const { return quorate_; }
  // A report from every member since the last view change.
  bool complete() const;
  bool live(const std::string& host) const { return members_.count(host) > 0 && !silent(host); }
  bool evacuating(const std::string& host) const {
    auto it = evacuations_.find(host);
    return it != evacuations_.end() && it->second.on;
  }
  // An evacuation flag with its version: each `evacuate` request is one more than the last its
  // sender knew, and the newest wins (on a tie, "on"), from a message or from a report.
  // Reports carry every agent's flags, so an agent restarted, or out of the view when one was
  // set or lifted, converges on the others' (found by AgentSimDrills: a lifted evacuation
  // whose message was lost with its sender's host left one agent evacuating itself for good,
  // refusing every standby its owner asked of it).
  struct Evacuation {
    bool on = false;
    uint64_t seq = 0;
  };
  const std::map<std::string, Evacuation>& evacuations() const { return evacuations_; }
  uint64_t evacuation_seq(const std::string& host) const {
    auto it = evacuations_.find(host);
    return it == evacuations_.end() ? 0 : it->second.seq;
  }
  const Claim* claim(const std::string& vm) const;
  const std::vector<Instance>* report(const std::string& host) const;
  const Instance* instance(const std::string& host, const std::string& vm) const;
  const std::set<std::string>& members() const { return members_; }
  // The load figures `host` last reported (report "stats": {"host": {...}, "vms": {vm: {...}}}),
  // or a discarded value. They inform balancing and the console, never failover.
  const nlohmann::json& stats(const std::string& host) const;
  // A live migration asked for (console, `ferry ha balance`): vm -> target host. It ends
  // when the target claims the VM, the target leaves the view, or it is cancelled.
  const std::string* move(const std::string& vm) const {
    auto it = moves_.find(vm);
    return it == moves_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, std::string>& moves() const { return moves_; }
  // When vm last changed hosts or started (this agent's clock), 0 if never seen.
  uint64_t placed_ms(const std::string& vm) const {
    auto it = placed_ms_.find(vm);
    return it == placed_ms_.end() ? 0 : it->second;
  }
  // The latest protect request for vm: (host, generation), if any.
  std::optional<std::pair<std::string, uint64_t>> protect(const std::string& vm) const {
    auto it = protects_.find(vm);
    if (it == protects_.end()) return std::nullopt;
    return it->second;
  }
  nlohmann::json ToJson() const;

  // Messages this agent sends.
  static std::string ReportMessage(const std::string& host, const std::vector<Instance>& instances);
  static std::string ClaimMessage(const std::string& vm, const Claim& c);
  static std::string ProtectMessage(const std::string& vm, const std::string& host, uint64_t generation);
  // seq 0 (a sender that knows no versions): newer than any.
  static std::string EvacuateMessage(const std::string& host, bool on, uint64_t seq = 0);
  static std::string MoveMessage(const std::string& vm, const std::string& to, bool on = true);
  static std::string ReportMessage(const std::string& host, const std::vector<Instance>& instances,
                                   const nlohmann::json& stats);
  // With the sender's claims: a host that was not in the view that agreed a claim (it was cut
  // off, or its agent restarted) learns it from the next reports, before it decides anything
  // (complete() waits for them), instead of acting on an owner it remembers.
  static std::string ReportMessage(const std::string& host, const std::vector<Instance>& instances,
                                   const nlohmann::json& stats, const std::map<std::string, Claim>& claims,
                                   const std::map<std::string, Evacuation>& evacuations = {});
  const std::map<std::string, Claim>& claims() const { return claims_; }

  // The agent's own bookkeeping, consulted by Decide().
  std::map<std::string, uint64_t> launched;         // vm -> generation booted or promoted here
  std::map<std::string, uint64_t> pending_claim;    // vm -> generation claimed, not yet delivered
  std::map<std::string, uint64_t> claimed_here;     // vm -> the last generation this agent claimed for this host
  std::map<std::string, std::string> protect_sent;  // vm -> host asked (until the standby shows up)
  bool startup_grace_over = false;                  // may claim a never-started VM without every host
  // vm -> the agent's clock before which no new standby is asked for or replicated to (the
  // backoff after a failed try to re-protect; the agent grows it, Decide() honours it).
  std::map<std::string, uint64_t> protect_not_before;
  // vm -> (host, until ms): a host that just failed to hold vm's standby (its VMM died, the
  // path to it broke) comes last among the candidates until then, so re-protection tries
  // another host rather than the same broken path, and does not flap back to it.
  std::map<std::string, std::pair<std::string, uint64_t>> protect_avoid;
  // VMs whose held output this agent released since their replication failed: a VMM whose
  // status still says "held" is not asked again on every tick; re-protection goes on.
  std::set<std::string> output_released;

 private:
  bool Apply(const std::string& host, const nlohmann::json& j);
  void Accept(const std::string& vm, const Claim& c);

  const ClusterConfig& config_;
  const std::string self_;
  std::set<std::string> members_;
  bool quorate_ = false;
  std::set<std::string> fresh_;  // members heard since the view change
  std::map<std::string, std::vector<Instance>> reports_;
  std::map<std::string, Claim> claims_;
  std::map<std::string, std::pair<std::string, uint64_t>> protects_;  // vm -> (host, generation)
  std::map<std::string, Evacuation> evacuations_;  // host -> its flag
  void MergeEvacuation(const std::string& host, bool on, uint64_t seq);
  std::map<std::string, nlohmann::json> stats_;      // host -> its last reported stats
  std::map<std::string, std::string> moves_;         // vm -> target host
  std::map<std::string, uint64_t> placed_ms_;        // vm -> when its owner last changed
  std::map<std::string, uint64_t> left_ms_;  // host -> when it left the view
  std::map<std::string, uint64_t> heard_ms_;  // member -> when it was last heard (or joined the view)
  uint64_t silence_ms_ = 0, self_silence_ms_ = 0, renew_bound_ms_ = 0;
  uint64_t stall_grace_until_ms_ = 0;
};

// What the agent on `self` should do now, given its own instances (`local`, fresher than its
// last report) and the VMs it is already acting on (`busy`).
std::vector<Action> Decide(const ClusterConfig& config, const std::string& self, const ClusterState& state,
                           const std::vector<Instance>& local, const std::set<std::string>& busy);

}  // namespace ferry::ha
