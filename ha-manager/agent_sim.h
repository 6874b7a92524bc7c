// The simulated cluster the AgentSim tests run: three agents, each over a fake Executor,
// talking through a fake group bus (agreed order, partitions), against a simulated world of
// VMMs whose replication ships a checkpoint per step and fails when its standby or the path
// to it is gone. Faults are injected between any two steps, and after every step the world
// is checked: never two copies of a VM serving. Test-only.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <deque>
#include <functional>
#include <random>
#include <system_error>
#include <tuple>

#include "ferry/ha/agent.h"
#include "ferry/ha/vmm_executor.h"

namespace ferry::ha::sim {

using nlohmann::json;
using replication::ReplicationState;
using replication::StandbyState;
using vmhost::Phase;

struct FakeVmm {
  Role role = Role::kPrimary;
  uint64_t generation = 0;
  Phase phase = Phase::kRunning;
  bool fenced = false;
  std::optional<ReplicationState> replication;
  std::string standby_host;
  bool output_held = false;
  uint64_t epochs = 0;
  StandbyState standby_state = StandbyState::kWaiting;
  uint64_t committed = 0;
  uint64_t seq = 0;        // primary: the guest's state (one write per step it runs); standby: its checkpoint's
  int sync_left = 0;       // primary: steps of initial sync still to go
  int unacked_steps = 0;   // primary: steps its standby has been silent (unreachable or hung)
  int unfed_steps = 0;     // standby: steps its primary has been silent
  uint64_t lease_until = 0;  // the watchdog lease (0: none); past it, a primary fences itself
  bool ever_fenced = false;
  // Stopped (SIGSTOP, a deadlock): it neither runs, ships, acknowledges nor answers, and its
  // own watchdog waits too; a standby gives up on a hung primary, as on a silent one.
  bool hung = false;
};

// Every VMM of the simulated cluster, and the faults.
struct World {
  std::map<std::string, std::map<std::string, FakeVmm>> vmms;  // host -> vm -> its VMM
  std::set<std::string> dead;
  std::set<std::pair<std::string, std::string>> cut;  // replication paths cut
  std::map<std::string, std::vector<Ended>> ended;    // host -> not reaped yet
  int release_calls = 0, replicate_calls = 0, boots = 0, fence_calls = 0;
  int sync_steps = 5;  // an initial sync takes this many steps
  // A primary whose standby is silent (its link cut, its host dead, it hung) holds its output
  // and finds the replication failed after this many steps (io_timeout_ms, 1 s by default);
  // one whose standby ended or gave up (the connection closed) finds it at once.
  int io_timeout_steps = 10;
  // The clients' view: the newest write whose acknowledgement left a serving primary, per VM,
  // and the acknowledged writes a promotion or a fresh boot lost (must stay 0).
  std::map<std::string, uint64_t> acked;
  std::vector<std::string> lost;
  bool sticky_output_held = false;  // a VMM whose status keeps saying "held" after a release
  // Probes that get no answer (a loaded VMM), in percent: the executor then reports what the
  // VMM last said, as not answering (VmmExecutor::NotAnswering).
  int probe_fail_pct = 0;
  std::mt19937 probe_rng{7};
  uint64_t now = 0;                 // the cluster's clock, set by the simulation

  bool LinkOk(const std::string& a, const std::string& b) const {
    return !dead.count(a) && !dead.count(b) && !cut.count(std::minmax(a, b));
  }
  FakeVmm* Find(const std::string& host, const std::string& vm) {
    if (dead.count(host)) return nullptr;
    auto h = vmms.find(host);
    if (h == vmms.end()) return nullptr;
    auto it = h->second.find(vm);
    return it == h->second.end() ? nullptr : &it->second;
  }
  void End(const std::string& host, const std::string& vm, const std::string& how) {
    auto& m = vmms[host];
    auto it = m.find(vm);
    if (it == m.end()) return;
    ended[host].push_back({vm, it->second.role, how});
    m.erase(it);
  }
  // One step of time: every running guest takes a write; every healthy replication syncs or
  // ships a checkpoint (whose acknowledgement releases the output); a broken one fails with
  // its output held (hold_on_failure) and its standby, if alive, loses its primary. Output
  // that is not held acknowledges writes at once.
  void Advance() {
    for (auto& [h, m] : vmms) {
      for (auto& [vm, p] : m) {
        if (p.role == Role::kPrimary && p.lease_until && now > p.lease_until && !p.fenced && !p.hung) {
          p.fenced = p.ever_fenced = true;  // the watchdog: no agent renewed the lease
          p.phase = Phase::kFenced;
        }
      }
    }
    std::set<std::pair<std::string, std::string>> fed;  // (host, vm) of standbys fed this step
    for (auto& [h, m] : vmms) {
      if (dead.count(h)) continue;
      for (auto& [vm, p] : m) {
        if (p.role != Role::kPrimary || !vmhost::GuestRuns(p.phase) || p.fenced || p.hung) continue;
        ++p.seq;
        const bool active = p.replication && replication::ReplicationActive(*p.replication);
        if (!active) {
          if (!p.output_held) acked[vm] = std::max(acked[vm], p.seq);
          continue;
        }
        FakeVmm* sb = Find(p.standby_host, vm);
        const bool link = LinkOk(h, p.standby_host);
        // A standby that ended, or gave up on this primary, has closed the connection (so has
        // the kernel of a live host whose standby process died): the primary finds its
        // replication broken at once.
        const bool closed = link && (!sb || sb->role != Role::kStandby || sb->standby_state == StandbyState::kPrimaryLost);
        // One it cannot hear (the link cut, its host dead, hung) goes silent: no acknowledgement,
        // the output held, and the replication failed after io_timeout_steps.
        const bool silent = !closed && (!link || sb->hung);
        if (silent && ++p.unacked_steps < io_timeout_steps) {
          p.output_held = true;
          continue;
        }
        if (closed || silent) {
          p.replication = ReplicationState::kFailed;
          p.output_held = true;
          p.unacked_steps = 0;
          continue;
        }
        p.unacked_steps = 0;
        fed.insert({p.standby_host, vm});
        if (p.replication == ReplicationState::kSyncing) {
          sb->standby_state = StandbyState::kSyncing;
          if (!p.output_held) acked[vm] = std::max(acked[vm], p.seq);  // nothing buffers during a sync
          if (--p.sync_left > 0) continue;
          p.replication = ReplicationState::kProtected;
        }
        ++p.epochs;
        sb->committed = p.epochs;
        sb->seq = p.seq;
        sb->standby_state = StandbyState::kReplicating;
        p.output_held = false;  // the acknowledgement releases everything up to this checkpoint
        acked[vm] = std::max(acked[vm], p.seq);
      }
    }
    // A standby its primary has not fed (silent, unreachable, gone) gives up on it after
    // io_timeout_steps, as the real one does after io_timeout_ms.
    for (auto& [h, m] : vmms) {
      for (auto& [vm, sb] : m) {
        if (sb.role != Role::kStandby || sb.hung) continue;
        const bool active = sb.standby_state == StandbyState::kReplicating || sb.standby_state == StandbyState::kSyncing;
        if (!active || fed.count({h, vm})) {
          sb.unfed_steps = 0;
        } else if (++sb.unfed_steps >= io_timeout_steps) {
          sb.standby_state = StandbyState::kPrimaryLost;
          sb.unfed_steps = 0;
        }
      }
    }
  }
  // Hosts where vm's guest serves clients: it runs, is not fenced, its output is not held (a
  // hung one counts: it serves again the moment it is let go on).
  std::vector<std::string> Serving(const std::string& vm) {
    std::vector<std::string> out;
    for (auto& [h, m] : vmms) {
      FakeVmm* p = Find(h, vm);
      if (p && p->role == Role::kPrimary && vmhost::GuestRuns(p->phase) && !p->fenced && !p->output_held) out.push_back(h);
    }
    return out;
  }
};

class FakeExecutor : public Executor {
 public:
  FakeExecutor(World& w, std::string host, uint64_t lease_ms) : w_(w), host_(std::move(host)), lease_ms_(lease_ms) {}

  std::vector<std::string> Adopt() override {
    std::vector<std::string> out;
    if (!lease_ms_) return out;
    for (auto& [vm, p] : w_.vmms[host_]) {
      out.push_back(vm);
      answered_ms_[vm] = w_.now;  // silent from its adoption, if it does not answer
      if (p.hung) {  // adopted by its socket's peer, known only by its command line
        last_.erase(vm);
        continue;
      }
      last_[vm] = Answer(vm, p);  // its status answer, as Adopt() asks it
    }
    return out;
  }
  Status StartPrimary(const VmSpec& v, uint64_t generation) override {
    FakeVmm p;
    p.generation = generation;
    if (lease_ms_) p.lease_until = w_.now + lease_ms_;
    w_.vmms[host_][v.name] = p;
    answered_ms_[v.name] = w_.now;
    ++w_.boots;
    if (w_.acked[v.name] > 0) w_.lost.push_back("booted afresh after " + std::to_string(w_.acked[v.name]) + " acked writes");
    return Status::Ok();
  }
  Status StartStandby(const VmSpec& v, uint64_t generation, const std::string& /*primary*/) override {
    FakeVmm s;
    s.role = Role::kStandby;
    s.generation = generation;
    if (lease_ms_) s.lease_until = w_.now + lease_ms_;
    w_.vmms[host_][v.name] = s;
    answered_ms_[v.name] = w_.now;
    return Status::Ok();
  }
  void Kill(const std::string& vm) override { w_.End(host_, vm, "signal 9"); }
  std::vector<Ended> Reap() override { return std::exchange(w_.ended[host_], {}); }
  std::vector<Instance> Probe(bool renew_leases) override {
    std::vector<Instance> out;
    for (auto& [vm, p] : w_.vmms[host_]) {
      Instance i;
      i.vm = vm;
      i.role = p.role;
      i.generation = p.generation;
      const bool answered = !p.hung && (w_.probe_fail_pct == 0 || static_cast<int>(w_.probe_rng() % 100) >= w_.probe_fail_pct);
      if (!answered) {
        auto last = last_.find(vm);
        auto t = told_.find(vm);  // promoted or given a generation since
        i = Instance::NotAnswering(vm, last != last_.end() ? std::optional(last->second) : std::nullopt, p.role, p.generation,
                                   t != told_.end() ? std::optional(t->second) : std::nullopt);
        // As VmmExecutor: silent once a probe's question is out longer than its timeout.
        if (w_.now - answered_ms_[vm] > VmmExecutor::kProbeTimeoutMs) i.silent_ms = w_.now - answered_ms_[vm];
        out.push_back(i);
        continue;
      }
      answered_ms_[vm] = w_.now;
      if (lease_ms_ && renew_leases) p.lease_until = w_.now + lease_ms_;  // probing renews the lease
      i = Answer(vm, p);
      last_[vm] = i;
      told_.erase(vm);
      out.push_back(i);
    }
    return out;
  }
  json Stats() override { return json::object(); }
  Status Replicate(const VmSpec& v, const HostConfig& to, uint64_t generation) override {
    ++w_.replicate_calls;
    FakeVmm* p = w_.Find(host_, v.name);
    if (!p || p->role != Role::kPrimary) return NotFound("no primary");
    if (p->hung) return Timeout("the VMM did not answer");
    FakeVmm* sb = w_.Find(to.name, v.name);
    if (!sb || sb->role != Role::kStandby || sb->standby_state != StandbyState::kWaiting || sb->hung ||
        !w_.LinkOk(host_, to.name)) {
      return Status(ErrorCode::kIo, "cannot reach a waiting standby on " + to.name);
    }
    if (generation < sb->generation) return Status(ErrorCode::kRefused, "stale generation");
    // The sync and the first checkpoint run in the world's steps (Advance): the agent sees
    // "syncing" meanwhile, as it would while the real call waits.
    p->replication = ReplicationState::kSyncing;
    p->sync_left = w_.sync_steps;
    p->unacked_steps = 0;
    p->standby_host = to.name;
    p->phase = Phase::kReplicating;
    sb->standby_state = StandbyState::kSyncing;
    return Status::Ok();
  }
  Status StopReplication(const std::string& vm, bool keep_standby) override {
    FakeVmm* p = w_.Find(host_, vm);
    if (p && p->hung) return Timeout("the VMM did not answer");
    if (!p || !p->replication) return Status::Ok();
    FakeVmm* sb = w_.Find(p->standby_host, vm);
    // The standby hears the end only over a live link; cut off, it finds its primary lost.
    if (sb && sb->role == Role::kStandby) {
      sb->standby_state = keep_standby || !w_.LinkOk(host_, p->standby_host) ? StandbyState::kPrimaryLost : StandbyState::kEnded;
    }
    p->replication = ReplicationState::kStopped;
    p->output_held = keep_standby;
    p->phase = Phase::kRunning;
    return Status::Ok();
  }
  Result<PromoteResult> Promote(const std::string& vm, uint64_t generation) override {
    FakeVmm* sb = w_.Find(host_, vm);
    if (sb && sb->hung) return Timeout("the VMM did not answer");
    if (!sb || sb->role != Role::kStandby || sb->committed == 0) return InvalidArgument("nothing to promote");
    // A forced promotion cuts the primary off: its replication fails, its output stays held.
    for (auto& [h, m] : w_.vmms) {
      auto it = m.find(vm);
      if (it == m.end() || it->second.role != Role::kPrimary || it->second.standby_host != host_) continue;
      if (it->second.replication && replication::ReplicationActive(*it->second.replication)) {
        it->second.replication = ReplicationState::kFailed;
        it->second.output_held = true;
      }
    }
    FakeVmm p;
    p.generation = generation;
    if (lease_ms_) p.lease_until = w_.now + lease_ms_;
    p.seq = sb->seq;
    if (p.seq < w_.acked[vm]) {
      w_.lost.push_back("promoted at write " + std::to_string(p.seq) + " after " + std::to_string(w_.acked[vm]) + " were acked");
    }
    const uint64_t epoch = sb->committed;
    *sb = p;
    told_[vm] = {Role::kPrimary, generation};
    return PromoteResult{epoch, 1.0};
  }
  Result<HandoverResult> Handover(const std::string& vm, uint64_t generation) override {
    FakeVmm* p = w_.Find(host_, vm);
    if (p && p->hung) return Timeout("the VMM did not answer");
    if (!p || p->replication != ReplicationState::kProtected) return Status(ErrorCode::kAborted, "not protected");
    FakeVmm* sb = w_.Find(p->standby_host, vm);
    if (!sb || sb->hung || !w_.LinkOk(host_, p->standby_host)) return Status(ErrorCode::kAborted, "standby unreachable");
    FakeVmm np;
    np.generation = generation;
    np.seq = p->seq;  // the final checkpoint
    *sb = np;
    p->phase = Phase::kHandedOver;
    p->replication = ReplicationState::kHandedOver;
    return HandoverResult{2.0};
  }
  Status Fence(const std::string& vm) override {
    ++w_.fence_calls;
    FakeVmm* p = w_.Find(host_, vm);
    if (!p) return NotFound("no VMM");
    if (p->hung) return Timeout("the VMM did not answer");
    p->phase = Phase::kFenced;
    p->fenced = p->ever_fenced = true;
    return Status::Ok();
  }
  Status Unfence(const std::string& vm) override {
    FakeVmm* p = w_.Find(host_, vm);
    if (!p) return NotFound("no VMM");
    if (p->hung) return Timeout("the VMM did not answer");
    if (p->lease_until && w_.now > p->lease_until) return Status(ErrorCode::kRefused, "the lease ran out");
    p->fenced = false;
    p->phase = p->replication && replication::ReplicationActive(*p->replication) ? Phase::kReplicating : Phase::kRunning;
    return Status::Ok();
  }
  Status ReleaseOutput(const std::string& vm, uint64_t generation) override {
    ++w_.release_calls;
    FakeVmm* p = w_.Find(host_, vm);
    if (!p) return NotFound("no VMM");
    if (p->hung) return Timeout("the VMM did not answer");
    if (generation < p->generation) return InvalidArgument("the generation may only grow");
    p->generation = generation;
    told_[vm] = {Role::kPrimary, generation};
    if (!w_.sticky_output_held) p->output_held = false;
    return Status::Ok();
  }

 private:
  // A VMM's status answer, read as VmmExecutor::Parse reads a real one.
  static Instance Answer(const std::string& vm, const FakeVmm& p) {
    Instance i;
    i.vm = vm;
    i.role = p.role;
    i.generation = p.generation;
    if (p.role == Role::kPrimary) {
      i.phase = p.phase;
      i.fenced = p.fenced;
      i.replication = p.replication;
      i.standby_host = p.standby_host;
      i.output_held = p.output_held;
      i.epochs = p.epochs;
    } else {
      i.standby_state = p.standby_state;
      i.committed = p.committed;
    }
    return i;
  }

  World& w_;
  const std::string host_;
  const uint64_t lease_ms_;
  std::map<std::string, Instance> last_;  // each VMM's last answer
  std::map<std::string, uint64_t> answered_ms_;  // when each VMM last answered (or started)
  std::map<std::string, std::pair<Role, uint64_t>> told_;
};

struct Bus {
  std::deque<std::pair<std::string, std::string>> queue;  // (sender, payload) in agreed order
  std::map<std::string, int> reports;                      // reports sent, per sender
};

class FakeGroup : public Group {
 public:
  FakeGroup(Bus& bus, World& w, std::string host) : bus_(bus), w_(w), host_(std::move(host)) {}
  Status Send(const std::string& payload) override {
    if (w_.dead.count(host_)) return Status(ErrorCode::kIo, "dead");
    if (payload.find(R"("t":"report")") != std::string::npos) ++bus_.reports[host_];
    bus_.queue.emplace_back(host_, payload);
    return Status::Ok();
  }
  bool QuorateNow() override { return quorate; }
  bool quorate = false;

 private:
  Bus& bus_;
  World& w_;
  const std::string host_;
};

// Three hosts a, b, c (a preferred, b its backup) and one protected VM, "kv".
class Sim {
 public:
  // Worker starts still to fail (as std::thread's constructor does without threads left).
  int failed_spawns_left = 0;
  // Steps a worker's call takes (promote, replicate, stop, switch, handover), drawn per task;
  // none if unset: it completes in the step that started it.
  std::function<uint64_t()> task_delay;

  explicit Sim(uint64_t lease_ms = 0, int failed_spawns = 0) : failed_spawns_left(failed_spawns) {
    auto c = ClusterConfig::Parse(json::parse(R"({"lease_ms": )" + std::to_string(lease_ms) + R"(,
      "hosts": [{"name":"a","nodeid":1,"address":"127.31.0.1","dir":"/tmp/ferry-sim-a"},
                {"name":"b","nodeid":2,"address":"127.31.0.2","dir":"/tmp/ferry-sim-b"},
                {"name":"c","nodeid":3,"address":"127.31.0.3","dir":"/tmp/ferry-sim-c"}],
      "vms": [{"name":"kv","guest":"kvstore.elf","primary":"a","backup":"b","port":7100}]})"));
    EXPECT_TRUE(c.ok()) << c.status().message();
    config_ = *c;
    for (const char* h : {"a", "b", "c"}) StartAgent(h);
    Views();
  }
  ~Sim() {
    tasks_.clear();
    agents_.clear();
  }

  void StartAgent(const std::string& h) {
    exec_[h] = std::make_unique<FakeExecutor>(world, h, config_.lease_ms);
    groups_[h] = std::make_unique<FakeGroup>(bus_, world, h);
    AgentOptions o;
    o.run_async = [this, h](std::function<void()> fn) {
      if (failed_spawns_left > 0) {
        --failed_spawns_left;
        throw std::system_error(EAGAIN, std::generic_category(), "Resource temporarily unavailable");
      }
      const uint64_t delay = task_delay ? task_delay() : 0;
      tasks_.push_back({h, now + delay * 100, std::move(fn)});
    };
    o.startup_grace_ms = 2000;
    agents_[h] = std::make_unique<Agent>(config_, *config_.Host(h), *exec_[h], *groups_[h], o, now);
  }
  Agent& agent(const std::string& h) { return *agents_.at(h); }
  bool has_agent(const std::string& h) const { return agents_.count(h) > 0 && !world.dead.count(h); }
  // An agent that answers its API now (a stopped one answers nothing, as a SIGSTOPped one).
  bool answers(const std::string& h) const { return has_agent(h) && !stopped_.count(h); }
  int reports_sent(const std::string& h) { return bus_.reports[h]; }

  std::set<std::string> Members(const std::string& h) const {
    std::set<std::string> out;
    for (const auto& [name, a] : agents_) {
      if (!world.dead.count(name) && part_.at(name) == part_.at(h)) out.insert(name);
    }
    return out;
  }
  // Every live agent hears the view of its partition.
  void Views() {
    for (auto& [h, a] : agents_) {
      if (!part_.count(h)) part_[h] = 0;
    }
    for (auto& [h, a] : agents_) {
      if (world.dead.count(h)) continue;
      auto m = Members(h);
      const bool quorate = m.size() * 2 > config_.hosts.size();
      groups_[h]->quorate = quorate;
      a->OnView(m, quorate, now);
    }
  }
  void Deliver() {
    while (!bus_.queue.empty()) {
      auto [from, payload] = bus_.queue.front();
      bus_.queue.pop_front();
      if (world.dead.count(from) || muted_.count(from)) continue;
      for (auto& [h, a] : agents_) {
        if (world.dead.count(h) || part_[h] != part_[from] || muted_.count(h)) continue;
        if (stopped_.count(h)) {
          held_[h].emplace_back(from, payload);  // Corosync queues them for the stopped process
        } else {
          a->OnMessage(from, payload, now);
        }
      }
    }
  }
  // SIGSTOP / SIGCONT of an agent: it stays in the view (Corosync runs on) but does nothing.
  void StopAgent(const std::string& h) { stopped_.insert(h); }
  void ContinueAgent(const std::string& h) {
    stopped_.erase(h);
    for (auto& [from, payload] : std::exchange(held_[h], {})) agents_.at(h)->OnMessage(from, payload, now);
  }
  // The agent runs, but no message reaches it or leaves it, its own included (a group whose
  // delivery to one member stalls while the membership holds).
  void Mute(const std::string& h, bool on) {
    if (on) {
      muted_.insert(h);
    } else {
      muted_.erase(h);
    }
  }
  // The host's Corosync goes away: its agent is told so (OnGroupLost), nothing reaches it or
  // leaves it, and the others see it leave; RejoinGroup() brings it back into the view.
  void LoseGroup(const std::string& h) {
    muted_.insert(h);
    part_[h] = 2;
    for (auto& [name, a] : agents_) {
      if (name == h) {
        a->OnGroupLost("lost Corosync (simulated)", now);
      } else if (!world.dead.count(name) && part_[name] != 2) {
        auto m = Members(name);
        groups_[name]->quorate = m.size() * 2 > config_.hosts.size();
        a->OnView(m, groups_[name]->quorate, now);
      }
    }
  }
  void RejoinGroup(const std::string& h) {
    muted_.erase(h);
    part_[h] = 0;
    agents_.at(h)->OnGroupRejoined();
    Views();
  }
  // 100 ms of cluster time: replication ships, every agent ticks, messages are delivered,
  // long operations complete; then the world is checked.
  void Step() {
    now += 100;
    world.now = now;
    world.Advance();
    for (auto& [h, a] : agents_) {
      if (!world.dead.count(h) && !stopped_.count(h)) a->Tick(now);
    }
    Deliver();
    RunTasks();
    Deliver();
    auto serving = world.Serving("kv");
    max_serving = std::max(max_serving, serving.size());
    ASSERT_LE(serving.size(), 1u) << "two copies of kv serve at " << now;
    ASSERT_TRUE(world.lost.empty()) << "acknowledged writes lost: " << world.lost.front();
  }
  void RunTasks() {
    std::deque<Task> later;
    while (!tasks_.empty()) {
      Task t = std::move(tasks_.front());
      tasks_.pop_front();
      if (stopped_.count(t.host) || t.ready_at > now) {
        later.push_back(std::move(t));  // a stopped agent's workers are stopped too
      } else if (!world.dead.count(t.host)) {
        t.fn();
      }
    }
    tasks_ = std::move(later);
  }
  // A dead host's or agent's workers die with it.
  void DropTasks(const std::string& h) {
    std::erase_if(tasks_, [&](const Task& t) { return t.host == h; });
  }
  // Steps until pred holds; false after max_steps.
  bool RunUntil(const std::function<bool()>& pred, int max_steps = 600) {
    for (int i = 0; i < max_steps; ++i) {
      if (pred()) return true;
      Step();
      if (::testing::Test::HasFatalFailure()) return false;
    }
    return pred();
  }
  // Steps until the old primary of "kv" on `host` is gone or has become a standby.
  bool RunUntilStalePrimaryGone(const std::string& host, int max_steps = 100) {
    return RunUntil([&] {
      FakeVmm* old = world.Find(host, "kv");
      return !old || old->role == Role::kStandby;
    }, max_steps);
  }
  void Run(int steps) {
    for (int i = 0; i < steps && !::testing::Test::HasFatalFailure(); ++i) Step();
  }

  void KillHost(const std::string& h) {
    world.dead.insert(h);
    world.vmms.erase(h);
    DropTasks(h);
    Views();
  }
  // The agent alone dies (SIGKILL); without a lease its VMMs die with it (PDEATHSIG).
  void KillAgent(const std::string& h) {
    DropTasks(h);
    agents_.erase(h);
    if (!config_.lease_ms) {
      std::vector<std::string> vms;
      for (auto& [vm, p] : world.vmms[h]) vms.push_back(vm);
      for (const auto& vm : vms) world.End(h, vm, "signal 9");
      world.ended[h].clear();
    }
    Views();
  }
  void RestartAgent(const std::string& h) {
    StartAgent(h);
    Views();
  }
  // A killed host comes back: its link, an empty VMM table, and a fresh agent.
  void ReviveHost(const std::string& h) {
    world.dead.erase(h);
    part_[h] = 0;
    muted_.erase(h);
    stopped_.erase(h);
    held_[h].clear();
    RestartAgent(h);
  }
  void Partition(const std::string& h) {
    part_[h] = 1;
    Views();
  }
  void Heal() {
    for (auto& [h, p] : part_) p = 0;
    Views();
  }
  // One host's partition healed (a host whose Corosync is lost stays out until it rejoins).
  void Unpartition(const std::string& h) {
    if (part_[h] == 1) part_[h] = 0;
    Views();
  }

  // Where kv's primary serves (unfenced, its output flowing), protected by `standby` (any
  // standby if empty).
  bool ProtectedOn(const std::string& host, const std::string& standby = "") {
    FakeVmm* p = world.Find(host, "kv");
    if (!p || p->role != Role::kPrimary || p->replication != ReplicationState::kProtected || p->output_held || p->fenced) {
      return false;
    }
    // A fenced primary's replication state is last checked when it last ran: its standby must
    // still be there.
    FakeVmm* sb = world.Find(p->standby_host, "kv");
    if (!sb || sb->role != Role::kStandby) return false;
    return standby.empty() || p->standby_host == standby;
  }
  std::string PrimaryHost() {
    auto s = world.Serving("kv");
    return s.size() == 1 ? s[0] : "";
  }

  World world;
  uint64_t now = 1000;
  size_t max_serving = 0;

 private:
  ClusterConfig config_;
  Bus bus_;
  std::map<std::string, std::unique_ptr<FakeExecutor>> exec_;
  std::map<std::string, std::unique_ptr<FakeGroup>> groups_;
  std::map<std::string, int> part_;
  struct Task {
    std::string host;
    uint64_t ready_at;  // when it may run (a worker's call takes that long)
    std::function<void()> fn;
  };
  std::deque<Task> tasks_;
  std::set<std::string> stopped_, muted_;
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> held_;  // for stopped agents
  std::map<std::string, std::unique_ptr<Agent>> agents_;
};

inline bool HasEvent(Agent& a, const std::string& kind) {
  for (const auto& e : a.events()) {
    if (e.value("kind", "") == kind) return true;
  }
  return false;
}

}  // namespace ferry::ha::sim
