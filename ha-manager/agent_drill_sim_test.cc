// bench/ha-soak at the model's level: the AgentSim cluster (agent_sim.h) through long
// random sequences of the drills' faults, each injected at a random step, held a random time
// and healed (a killed host or agent brought back, as the soak does). After every drill the
// VM must be protected again within the soak's bound (180 s), and at every step Step()
// checks that no two copies serve and no acknowledged write is lost. Each failure prints its
// seed and the drills that led to it, so it replays exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>

#include "agent_sim.h"
#include "ferry/ha/drill.h"

namespace ferry::ha::sim {
namespace {

constexpr int kRestoreSteps = 1800;  // 180 s of cluster time: bench/ha-soak's bound
const std::vector<std::string> kHosts = {"a", "b", "c"};

// Where the VM serves protected, as its owner's agent sees it too: protected, and not busy
// with it (a worker may be about to stop the replication the VMM still reports protected).
std::string Protected(Sim& sim) {
  for (const auto& h : kHosts) {
    if (!sim.ProtectedOn(h) || !sim.has_agent(h)) continue;
    if (Agent::CountsProtected(sim.agent(h).Handle({{"op", "status"}}), "kv")) return h;
  }
  return "";
}

// The VM as `ferry drill` reads it: the first quorate agent's status, in host order, hosts
// other than `avoid` first (AnyAgent).
json ClusterView(Sim& sim, const std::string& avoid = "") {
  std::vector<std::string> order;
  for (const auto& h : kHosts) {
    if (h != avoid) order.push_back(h);
  }
  if (!avoid.empty()) order.push_back(avoid);
  for (const auto& h : order) {
    if (!sim.has_agent(h)) continue;
    const json st = sim.agent(h).Handle({{"op", "status"}});
    if (!st["cluster"].value("quorate", false)) continue;
    for (const auto& v : st["cluster"]["vms"]) {
      if (v.value("name", "") == "kv") return v;
    }
  }
  return json::object();
}

// What `ferry drill` expects of a fault held `hold` steps (Expected()); the sim's faults
// beyond the drill's: a stopped standby agent keeps the owner (without a lease it changes
// nothing; with one, once counted hung its host has left, and the owner disowns the replica
// there at the next generation before it re-protects), the others are not judged.
std::optional<Outcome> ExpectedOf(const std::string& fault, uint64_t lease_ms, int hold) {
  if (fault == "stop-standby-agent") return lease_ms ? Outcome::kReprotect : Outcome::kNothing;
  // A hung VMM: its standby gives up on it at once here (the replication is re-protected at
  // the next generation); past hung_vmm_ms (and the probes' second) its agent kills it.
  if (fault == "stop-standby-vm") return Outcome::kReprotect;
  if (fault == "stop-vm") {
    const uint64_t hung_ms = ClusterConfig{}.hung_vmm_ms, held_ms = static_cast<uint64_t>(hold) * 100;
    if (held_ms + 300 < hung_ms) return Outcome::kReprotect;  // (the probes' steps around the hold)
    return held_ms > hung_ms + 2000 ? std::optional(Outcome::kFailover) : std::nullopt;
  }
  const auto f = ParseFault(fault);
  if (!f) return std::nullopt;
  // With a lease, an agent stopped longer than it has run out: the VMM fenced itself and the
  // VM goes on at a new generation, failed over or reclaimed by its owner; from then to the
  // drill's margin either may come.
  // (Held steps, plus the steps around them before the agent ticks again.)
  const uint64_t held_ms = static_cast<uint64_t>(hold) * 100;
  if (*f == Fault::kStopAgent && lease_ms && held_ms + 300 > lease_ms && held_ms <= lease_ms + kHungAgentMarginMs) return std::nullopt;
  const Outcome o = Expected(*f, lease_ms, hold / 10.0);
  // The sim heals every fault after its hold (the drill heals once it saw the outcome): with
  // a lease, a fault healed before the lease ran out may rightly end in no failover.
  if (o == Outcome::kFailover && lease_ms && static_cast<uint64_t>(hold) * 100 <= lease_ms + kHungAgentMarginMs) return std::nullopt;
  return o;
}

// Whether the drill's outcome came, as `ferry drill` watches for it (Watch): for nothing, the
// VM keeps its owner and generation at every look from the heal and is seen running within
// 3 + 10 s (StillServing); for a re-protection, once protected again the same host owns it
// (UntilReprotected); for a failover, a newer generation is seen running within 30 s, read
// from hosts other than the faulted one first (UntilFailover). Empty if met, else why not.
std::string OutcomeMissed(Sim& sim, Outcome expected, const std::string& at, const std::string& owner, uint64_t generation) {
  auto seen = [&](const json& view) {
    return " (now " + view.value("owner", "") + " g" + std::to_string(view.value("generation", uint64_t{0})) + " " +
           view.value("state", "-") + "; was " + owner + " g" + std::to_string(generation) + ")";
  };
  switch (expected) {
    case Outcome::kNothing: {
      for (int step = 0; step <= 130; ++step, sim.Step()) {
        const json view = ClusterView(sim);
        if (view.value("owner", "") != owner || view.value("generation", uint64_t{0}) != generation) {
          return "expected nothing, it moved" + seen(view);
        }
        if (step >= 30 && view.value("state", "") == "running") return "";
      }
      return "expected nothing, not running 13 s after the heal" + seen(ClusterView(sim));
    }
    case Outcome::kReprotect: {
      const json view = ClusterView(sim);
      return view.value("owner", "") == owner ? "" : "expected a re-protection, it failed over" + seen(view);
    }
    case Outcome::kFailover: {
      const bool met = sim.RunUntil([&] {
        const json view = ClusterView(sim, at);
        return view.value("generation", uint64_t{0}) > generation && view.value("state", "") == "running";
      }, 300);
      return met ? "" : "expected a failover" + seen(ClusterView(sim, at));
    }
  }
  return "";
}

// A fault under way: what it did (for the log), and how to heal it.
struct OpenFault {
  std::string what;
  std::function<void()> heal = [] {};
};

// Opens `fault` aimed at `owner` (the host the VM runs on, for a second fault any host),
// `standby` (its standby's host, or "") and `third` (the other one). Heals are safe in any
// order: a partition's heals only that host, and a host's agent is continued or rejoined
// only if it is still there.
OpenFault Open(Sim& sim, const std::string& fault, const std::string& owner, const std::string& standby,
               const std::string& third) {
  const std::string what = fault + " (owner " + owner + ", standby " + standby;
  auto cut = [&sim](const std::string& x, const std::string& y) {
    if (x.empty() || y.empty()) return std::function<void()>([] {});
    const std::pair<std::string, std::string> link = std::minmax(x, y);  // (minmax gives references)
    const bool was = sim.world.cut.count(link) > 0;
    sim.world.cut.insert(link);
    return std::function<void()>([&sim, link, was] {
      if (!was) sim.world.cut.erase(link);
    });
  };
  auto isolate = [&](const std::string& h) {  // its Corosync and its replication links
    sim.Partition(h);
    std::vector<std::function<void()>> heals;
    for (const auto& other : kHosts) {
      if (other != h) heals.push_back(cut(h, other));
    }
    return OpenFault{what, [&sim, h, heals] {
                       for (const auto& f : heals) f();
                       sim.Unpartition(h);
                     }};
  };
  auto alive = [&sim](const std::string& h) { return sim.has_agent(h); };
  if (fault == "kill-vm") {
    sim.world.End(owner, "kv", "signal 9");
  } else if (fault == "kill-standby") {
    sim.world.End(standby, "kv", "signal 9");
  } else if (fault == "stop-agent" || fault == "stop-standby-agent") {
    const std::string at = fault == "stop-agent" ? owner : standby;
    sim.StopAgent(at);
    return {what, [&sim, at, alive] {
              if (alive(at)) sim.ContinueAgent(at);
            }};
  } else if (fault == "cut-replication") {
    return {what, cut(owner, standby)};
  } else if (fault == "kill-agent") {
    sim.KillAgent(owner);
    return {what, [&sim, owner] {
              if (!sim.world.dead.count(owner)) sim.RestartAgent(owner);
            }};
  } else if (fault == "kill-host" || fault == "kill-standby-host") {
    const std::string at = fault == "kill-host" ? owner : standby;
    sim.KillHost(at);
    return {what, [&sim, at] {
              if (sim.world.dead.count(at)) sim.ReviveHost(at);
            }};
  } else if (fault == "cut-corosync") {
    sim.Partition(owner);
    return {what, [&sim, owner] { sim.Unpartition(owner); }};
  } else if (fault == "partition-host" || fault == "partition-standby") {
    return isolate(fault == "partition-host" ? owner : standby);
  } else if (fault == "restart-corosync" || fault == "restart-standby-corosync") {
    const std::string at = fault == "restart-corosync" ? owner : standby;
    sim.LoseGroup(at);
    return {what, [&sim, at, alive] {
              if (alive(at)) sim.RejoinGroup(at);
            }};
  } else if (fault == "stop-vm" || fault == "stop-standby-vm") {  // SIGSTOP of a VMM, SIGCONT after
    const std::string at = fault == "stop-vm" ? owner : standby;
    if (FakeVmm* v = sim.world.Find(at, "kv")) v->hung = true;
    return {what, [&sim, at] {
              if (FakeVmm* v = sim.world.Find(at, "kv")) v->hung = false;  // or one started since: never hung
            }};
  } else if (fault == "evacuate" && sim.answers(third)) {
    (void)sim.agent(third).Handle({{"op", "evacuate"}, {"host", owner}});
    return {what, [&sim, owner] {
              // Lifted through the first agent that takes it, as an operator would go on to the
              // next host when one refuses (a partition without quorum refuses).
              for (const auto& h : kHosts) {
                if (sim.answers(h) && sim.agent(h).Handle({{"op", "evacuate"}, {"host", owner}, {"on", false}}).value("ok", false)) {
                  break;
                }
              }
            }};
  } else if (fault == "move") {
    const std::string& asker = sim.answers(standby) ? standby : third;
    if (sim.answers(asker)) (void)sim.agent(asker).Handle({{"op", "move"}, {"vm", "kv"}, {"to", third}});
  }
  return {what};
}

// One drill: the fault, held `hold` steps, then healed. Returns what it did, for the log.
std::string Inject(Sim& sim, std::mt19937& rng, const std::string& fault, int hold) {
  const std::string owner = Protected(sim);
  const std::string standby = sim.world.Find(owner, "kv")->standby_host;
  std::string third;
  for (const auto& h : kHosts) {
    if (h != owner && h != standby) third = h;
  }
  if (fault == "kill-host-mid-move") {
    (void)sim.agent(standby).Handle({{"op", "move"}, {"vm", "kv"}, {"to", third}});
    const int into = static_cast<int>(rng() % 12);
    sim.Run(into);
    sim.KillHost(owner);
    sim.Run(hold);
    sim.ReviveHost(owner);
    return fault + " (owner " + owner + ", standby " + standby + ", held " + std::to_string(hold) + ") killed " +
           std::to_string(into) + " steps into a move to " + third;
  }
  OpenFault f = Open(sim, fault, owner, standby, third);
  sim.Run(hold);
  f.heal();
  return f.what + ", held " + std::to_string(hold) + ")";
}

// Each VMM of the VM and each agent's bookkeeping of it, for a failure's log.
std::string Where(Sim& sim) {
  std::string where;
  for (const auto& h : kHosts) {
    const FakeVmm* v = sim.world.Find(h, "kv");
    if (!v) continue;
    where += " " + h + ":" + (v->role == Role::kPrimary ? "primary" : "standby") + " g" + std::to_string(v->generation) +
             (v->fenced ? " fenced" : "") + (v->output_held ? " held" : "") +
             (v->replication ? " repl=" + std::string(replication::ReplicationStateName(*v->replication)) : "") +
             (v->role == Role::kStandby ? " sb=" + std::string(replication::StandbyStateName(v->standby_state)) : "");
  }
  for (const auto& [x, y] : sim.world.cut) where += " cut:" + x + "-" + y;
  for (const auto& h : kHosts) {
    if (!sim.has_agent(h)) continue;
    const json st = sim.agent(h).Handle({{"op", "status"}});
    where += "\n    " + h + ": busy " + st["busy"].dump() + ", evacuating " + std::to_string(sim.agent(h).state().evacuating(h)) +
             ", protect " + (sim.agent(h).state().protect("kv") ? sim.agent(h).state().protect("kv")->first : "-");
  }
  return where;
}

// Slow workers: each worker's call takes 0 to FERRY_SIM_SLOW_STEPS (20, 2 s) steps, drawn
// from `slow`, and 1 probe in 20 gets no answer (loaded VMMs).
void MakeSlow(Sim& sim, std::mt19937& slow, uint32_t seed) {
  const char* max = std::getenv("FERRY_SIM_SLOW_STEPS");
  const uint64_t slow_max = max ? std::strtoull(max, nullptr, 10) : 20;
  sim.task_delay = [&slow, slow_max] { return static_cast<uint64_t>(slow() % (slow_max + 1)); };
  sim.world.probe_fail_pct = 5;
  sim.world.probe_rng.seed(seed);
}

// Runs `drills` random drills from `seed`; empty if every one ended protected, else the log.
// With slow_workers, each worker's call (promote, replicate, stop, switch, handover) takes
// 0 to 2 s, drawn per call (the VM stays busy meanwhile and faults land inside those calls),
// and 1 probe in 20 gets no answer (the executor reports the VMM's last answer, not answering).
std::string RandomDrills(uint32_t seed, int drills, uint64_t lease_ms, const std::vector<std::string>& faults,
                         bool slow_workers = false) {
  if (const char* only = std::getenv("FERRY_SIM_ONLY_SEED"); only && std::strtoul(only, nullptr, 10) != seed) return "";
  Sim sim(lease_ms);
  std::mt19937 rng(seed), slow(seed * 7919u);
  if (slow_workers) MakeSlow(sim, slow, seed);
  std::string log = "seed " + std::to_string(seed) + ", lease " + std::to_string(lease_ms) + " ms" +
                    (slow_workers ? ", slow workers" : "") + ":";
  if (!sim.RunUntil([&] { return !Protected(sim).empty(); }, kRestoreSteps)) return log + " never protected at start";
  for (int d = 1; d <= drills; ++d) {
    sim.Run(static_cast<int>(rng() % 30));  // a random instant of the checkpoint cycle
    if (::testing::Test::HasFatalFailure()) return log + " (Step() failed before drill " + std::to_string(d) + ")";
    if (Protected(sim).empty()) continue;  // the soak waits for protection first
    // The drill reads the owner from an agent's status (AnyAgent): until it agrees with where
    // the VM is protected, it would aim at the wrong host.
    const bool agreed = sim.RunUntil([&] {
      const json v = ClusterView(sim);
      const std::string p = Protected(sim);
      return !p.empty() && v.value("owner", "") == p && v.value("replication", "") == "protected";
    }, 100);
    if (!agreed) return log + " -> the agents' view never agreed with where the VM is protected (drill " + std::to_string(d) + ")";
    const std::string fault = faults[rng() % faults.size()];
    int hold = 5 + static_cast<int>(rng() % 80);
    if (fault == "stop-vm" || fault == "stop-standby-vm") hold *= 3;  // past hung_vmm_ms, or not
    const json before = ClusterView(sim);
    // A move still under way (an earlier kill-host-mid-move's) may complete in any drill: as
    // any agent knows it (one restarted since knows none).
    bool moving = false;
    for (const auto& h : kHosts) {
      if (!sim.has_agent(h)) continue;
      const json st = sim.agent(h).Handle({{"op", "status"}});  // (a temporary in the for would dangle)
      for (const auto& v : st["cluster"]["vms"]) moving |= v.contains("moving_to");
    }
    // Whether this drill is judged, and by what (a plain Outcome: GCC 12 took an optional's
    // flag for uninitialized here).
    const std::optional<Outcome> expected_of = moving ? std::nullopt : ExpectedOf(fault, lease_ms, hold);
    const bool judged = expected_of.has_value();
    const Outcome expected = expected_of.value_or(Outcome::kNothing);
    std::fprintf(stderr, "--- drill %d at %llu ms: %s\n", d, static_cast<unsigned long long>(sim.now), fault.c_str());
    log += "\n  drill " + std::to_string(d) + " at " + std::to_string(sim.now) + " ms: " + Inject(sim, rng, fault, hold);
    std::fprintf(stderr, "--- drill %d healed at %llu ms\n", d, static_cast<unsigned long long>(sim.now));
    if (::testing::Test::HasFatalFailure()) return log + " -> Step() failed";
    const uint64_t healed = sim.now;
    const std::string was_owner = before.value("owner", "");
    const uint64_t was_gen = before.value("generation", uint64_t{0});
    if (judged && expected == Outcome::kNothing) {
      if (const std::string missed = OutcomeMissed(sim, expected, was_owner, was_owner, was_gen); !missed.empty()) {
        if (std::getenv("FERRY_SIM_DEBUG")) {
          for (const auto& h : kHosts) {
            if (!sim.has_agent(h)) continue;
            for (const auto& e : sim.agent(h).events()) {
              if (e.value("t_ms", uint64_t{0}) + 30000 > sim.now) std::fprintf(stderr, "%s %s\n", h.c_str(), e.dump().c_str());
            }
          }
        }
        return log + " -> " + missed;
      }
    }
    if (!sim.RunUntil([&] { return !Protected(sim).empty(); }, kRestoreSteps)) {
      return log + " -> not protected " + std::to_string(kRestoreSteps / 10) + " s after the heal; VMMs:" + Where(sim);
    }
    if (judged && expected != Outcome::kNothing) {
      // The faulted host: the owner's, or for kill-standby and stop-standby-vm the standby's.
      const std::string at = fault == "kill-standby" || fault == "stop-standby-vm" ? before.value("standby_host", "") : was_owner;
      if (const std::string missed = OutcomeMissed(sim, expected, at, was_owner, was_gen); !missed.empty()) {
        return log + " -> " + missed;
      }
    }
    log += " -> protected on " + Protected(sim) + " after " + std::to_string(sim.now - healed) + " ms";
  }
  return "";
}

// Where the VM's VMMs are now, for a fault landing while another is under way: a primary's
// host (a serving one first) and a standby's host, each "" if none.
std::pair<std::string, std::string> Copies(Sim& sim) {
  std::string primary = sim.PrimaryHost(), standby;
  for (const auto& h : kHosts) {
    const FakeVmm* v = sim.world.Find(h, "kv");
    if (!v) continue;
    if (v->role == Role::kPrimary && primary.empty()) primary = h;
    if (v->role == Role::kStandby && standby.empty()) standby = h;
  }
  return {primary, standby};
}

// Drills whose faults overlap (with slow workers, as RandomDrills): each drill opens a fault
// of `first` on the protected VM, and
// partway through its hold a fault of `second` on a random host (or on the replication path
// as it is then), held a random time of its own; both are healed (the second first). No
// outcome is judged (two faults can end either way), only the invariants Step() checks at
// every step and protection again within the soak's bound. Empty if every drill passed,
// else the log.
std::string OverlappingDrills(uint32_t seed, int drills, uint64_t lease_ms, const std::vector<std::string>& first,
                              const std::vector<std::string>& second, bool slow_workers) {
  if (const char* only = std::getenv("FERRY_SIM_ONLY_SEED"); only && std::strtoul(only, nullptr, 10) != seed) return "";
  Sim sim(lease_ms);
  std::mt19937 rng(seed), slow(seed * 7919u);
  if (slow_workers) MakeSlow(sim, slow, seed);
  std::string log = "seed " + std::to_string(seed) + ", lease " + std::to_string(lease_ms) + " ms" +
                    (slow_workers ? ", slow workers" : "") + ", overlapping:";
  if (!sim.RunUntil([&] { return !Protected(sim).empty(); }, kRestoreSteps)) return log + " never protected at start";
  for (int d = 1; d <= drills; ++d) {
    sim.Run(static_cast<int>(rng() % 30));
    if (::testing::Test::HasFatalFailure()) return log + " (Step() failed before drill " + std::to_string(d) + ")";
    const std::string owner = Protected(sim);
    if (owner.empty()) continue;
    const std::string standby = sim.world.Find(owner, "kv")->standby_host;
    std::string third;
    for (const auto& h : kHosts) {
      if (h != owner && h != standby) third = h;
    }
    const std::string f1 = first[rng() % first.size()], f2 = second[rng() % second.size()];
    const int hold1 = 5 + static_cast<int>(rng() % 80), into = static_cast<int>(rng() % hold1);
    const int hold2 = 5 + static_cast<int>(rng() % 80);
    const std::string at = kHosts[rng() % kHosts.size()];
    std::fprintf(stderr, "--- drill %d at %llu ms: %s, then %s\n", d, static_cast<unsigned long long>(sim.now), f1.c_str(),
                 f2.c_str());
    OpenFault a = Open(sim, f1, owner, standby, third);
    sim.Run(into);
    // The second lands where things are now: on `at`, its standby being where one is.
    const auto [primary_now, standby_now] = Copies(sim);
    OpenFault b;
    if (f2 == "cut-replication") {
      b = Open(sim, f2, primary_now, primary_now.empty() ? "" : sim.world.Find(primary_now, "kv")->standby_host, "");
    } else if (sim.has_agent(at)) {
      std::string other;  // an evacuation's asker, a move's target (a stopped agent answers nothing)
      for (const auto& h : kHosts) {
        if (h != at && sim.answers(h)) other = h;
      }
      b = Open(sim, f2, at, standby_now == at ? "" : standby_now, other);
    } else {
      b.what = f2 + " (no agent on " + at;
    }
    log += "\n  drill " + std::to_string(d) + " at " + std::to_string(sim.now - into * 100) + " ms: " + a.what + ", held " +
           std::to_string(hold1) + "); " + std::to_string(into) + " steps in, " + b.what + ", held " + std::to_string(hold2) + ")";
    sim.Run(hold2);
    b.heal();
    sim.Run(std::max(0, hold1 - into - hold2));
    a.heal();
    if (::testing::Test::HasFatalFailure()) return log + " -> Step() failed";
    const uint64_t healed = sim.now;
    if (!sim.RunUntil([&] { return !Protected(sim).empty(); }, kRestoreSteps)) {
      return log + " -> not protected " + std::to_string(kRestoreSteps / 10) + " s after the heal; VMMs:" + Where(sim);
    }
    log += " -> protected on " + Protected(sim) + " after " + std::to_string(sim.now - healed) + " ms";
  }
  return "";
}

const std::vector<std::string> kAllFaults = {"kill-vm",   "kill-standby", "stop-agent",     "cut-replication",
                                             "kill-agent", "kill-host",    "cut-corosync",   "partition-host",
                                             "restart-corosync", "kill-host-mid-move"};
// Beyond the drills: the standby's host killed or partitioned, its agent stopped or its
// Corosync restarted, an evacuation of the owner (lifted after the hold), a move to the
// third host. (Not both agents killed at once: without a lease their VMMs die with them, and
// with them every copy of the VM; the sim found that at once, as it should.)
const std::vector<std::string> kMoreFaults = {"kill-standby-host", "partition-standby",   "evacuate",
                                              "move",              "stop-standby-agent",  "restart-standby-corosync",
                                              "kill-vm",           "kill-standby",        "cut-replication",
                                              "kill-host-mid-move"};

// FERRY_SIM_SEEDS=N runs N times the seeds (CI runs 1x: about 3 s).
uint32_t SeedScale() {
  const char* v = std::getenv("FERRY_SIM_SEEDS");
  const long n = v ? std::strtol(v, nullptr, 10) : 1;
  return n > 0 && n < 100000 ? static_cast<uint32_t>(n) : 1;
}

// The four faults of HaSoak.AShortSoakUnderDrillsPassesItsVerdict, many times over (every
// other sequence with slow workers).
TEST(AgentSimDrills, TheCiSoaksFaultsAlwaysEndProtected) {
  for (uint32_t seed = 1; seed <= 40 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log =
        RandomDrills(seed, 12, 0, {"kill-vm", "kill-standby", "stop-agent", "cut-replication"}, /*slow_workers=*/seed % 2);
    EXPECT_TRUE(log.empty()) << log;
  }
}

TEST(AgentSimDrills, EveryDrillFaultAlwaysEndsProtected) {
  for (uint32_t seed = 100; seed < 100 + 40 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = RandomDrills(seed, 12, 0, kAllFaults);
    EXPECT_TRUE(log.empty()) << log;
  }
}

TEST(AgentSimDrills, WithALeaseEveryDrillFaultAlwaysEndsProtected) {
  for (uint32_t seed = 200; seed < 200 + 30 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = RandomDrills(seed, 12, 2000, kAllFaults);
    EXPECT_TRUE(log.empty()) << log;
  }
}

TEST(AgentSimDrills, WithSlowWorkersEveryDrillFaultAlwaysEndsProtected) {
  for (uint32_t seed = 300; seed < 300 + 30 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = RandomDrills(seed, 12, seed % 2 ? 2000 : 0, kAllFaults, /*slow_workers=*/true);
    EXPECT_TRUE(log.empty()) << log;
  }
}

// A VMM stopped (SIGSTOP, a deadlock) for 1.5 to 25 s, primary or standby: one stopped past
// hung_vmm_ms is killed by its agent and the VM fails over or is re-protected; one let go on
// before serves on, re-protected. Never two copies: a hung primary counts as serving.
TEST(AgentSimDrills, HungVmmsAreKilledAndTheVmEndsProtected) {
  for (uint32_t seed = 500; seed < 500 + 30 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = RandomDrills(seed, 8, seed % 3 == 0 ? 2000 : 0, {"stop-vm", "stop-standby-vm", "stop-vm", "kill-vm"},
                                         /*slow_workers=*/seed % 2);
    EXPECT_TRUE(log.empty()) << log;
  }
}

// Two faults at once: any drill's fault, and while it is held a second one that takes
// nothing away for good (an agent stopped, a host cut off or its Corosync cut or restarted, a
// VMM stopped, a replication path cut, or an operator's evacuation or move) wherever it lands. It has found nothing the
// single-fault sweeps had not; it is here so that combinations stay covered.
TEST(AgentSimDrills, OverlappingFaultsNeverLoseAWriteAndEndProtected) {
  std::vector<std::string> first = kAllFaults;
  std::erase(first, "kill-host-mid-move");
  for (const auto& f : kMoreFaults) {
    if (f != "kill-host-mid-move" && std::find(first.begin(), first.end(), f) == first.end()) first.push_back(f);
  }
  const std::vector<std::string> second = {"stop-agent", "cut-corosync",    "partition-host", "restart-corosync",
                                           "stop-vm",    "cut-replication", "evacuate",       "move"};
  for (uint32_t seed = 600; seed < 600 + 30 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = OverlappingDrills(seed, 8, seed % 2 ? 2000 : 0, first, second, /*slow_workers=*/seed % 3 == 0);
    EXPECT_TRUE(log.empty()) << log;
  }
}

TEST(AgentSimDrills, StandbyHostFaultsEvacuationsAndMovesAlwaysEndProtected) {
  for (uint32_t seed = 400; seed < 400 + 30 * SeedScale() && !HasFatalFailure(); ++seed) {
    const std::string log = RandomDrills(seed, 12, seed % 3 == 0 ? 2000 : 0, kMoreFaults, /*slow_workers=*/seed % 2);
    EXPECT_TRUE(log.empty()) << log;
  }
}

}  // namespace
}  // namespace ferry::ha::sim
