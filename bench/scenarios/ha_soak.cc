// bench/ha-soak: a 3-host Corosync test cluster with two protected kvstore VMs (kv0, kv1) left
// running for --duration-s (an hour by default), a drill of a random kind every
// --drill-every-s (each under its own kv-load client), and every process of every host (its
// agent, VMMs, standbys, Corosync) sampled every --sample-s: RSS, address space, mappings,
// threads and descriptors. One JSON line per sample and per drill on stdout, then a verdict:
// every drill passed (0 lost writes, never two primaries, its expected outcome), protection
// came back after each, and every process, past a warm-up of its own, grew by less than
// 8 MiB of RSS (plus its guest RAM for a VMM or standby, and a standby's staging buffer) and
// kept its maps, threads and fds flat.
//
//   build/bench/ha_soak_bench [--duration-s 3600] [--drill-every-s 180] [--sample-s 10]
//                             [--warmup-s 300] [--seed N] [--faults kill-host,kill-standby,...]
//
// After a fault that kills a host or an agent, the bench brings it back (link, Corosync,
// agent) as bench/drills does. Everything created is removed on every exit path.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "e2e_util.h"
#include "ferry/base/clock.h"
#include "ferry/migrate/page_sink.h"
#include "ha_cluster_util.h"
#include "proc_usage.h"
#include "test_cluster.h"

using namespace ferry;
using namespace ferry::e2e;
using nlohmann::json;

namespace {

volatile sig_atomic_t g_stop = 0;

struct Options {
  double duration_s = 3600, drill_every_s = 180, sample_s = 10, warmup_s = 300;
  uint32_t seed = 0;
  std::vector<std::string> faults = {"kill-host", "kill-vm", "kill-agent", "stop-agent", "cut-replication",
                                     "cut-corosync", "kill-standby", "kill-host-mid-move", "partition-host"};
};

// One process's samples: (t_s, usage).
constexpr double kGuestMib = 64;  // the test cluster's kvstore VMs (tests/test_cluster.cc)

struct Series {
  std::string host, what;
  std::vector<double> t, rss, maps, threads, fds;
};

std::string What(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(cmd.begin(), cmd.end(), '\0', ' ');
  if (cmd.find("corosync") != std::string::npos) return "corosync";
  if (cmd.find(" ha agent") != std::string::npos) return "agent";
  if (cmd.find(" standby ") != std::string::npos) return "standby";
  if (cmd.find(" run ") != std::string::npos) return "vmm";
  return "";
}

void Sample(const Cluster& c, double t_s, std::map<pid_t, Series>* series) {
  for (int i = 0; i < c.tc->size(); ++i) {
    auto r = RunCommand({"ip", "netns", "pids", c.tc->netns(i)}, c.tc->dir() + "/pids", 10000);
    std::istringstream ps(r.out);
    for (pid_t p; ps >> p;) {
      const std::string what = What(p);
      bench::ProcUsage u;
      if (what.empty() || !bench::ReadProcUsage(p, &u)) continue;
      Series& s = (*series)[p];
      s.host = "h" + std::to_string(i);
      s.what = what;
      s.t.push_back(t_s);
      s.rss.push_back(u.rss_kib);
      s.maps.push_back(u.maps);
      s.threads.push_back(u.threads);
      s.fds.push_back(u.fds);
      std::printf("%s\n", json{{"sample", true}, {"t_s", t_s}, {"host", s.host}, {"what", what}, {"pid", p},
                               {"rss_kib", u.rss_kib}, {"vsz_kib", u.vsz_kib}, {"maps", u.maps}, {"threads", u.threads},
                               {"fds", u.fds}}.dump().c_str());
    }
  }
  std::fflush(stdout);
}

int HostOf(const std::string& name) { return name.size() == 2 && name[0] == 'h' ? name[1] - '0' : -1; }

// Brings host i back after a fault that killed it or its agent: link, Corosync, agent.
bool Revive(Cluster* c, int i, bool whole_host) {
  if (whole_host) {
    Status st = c->tc->Heal(i);
    if (st.ok()) st = c->tc->RestartCorosync(i);
    if (st.ok()) st = c->tc->WaitQuorate(i, true, 30000);
    if (!st.ok()) {
      std::fprintf(stderr, "ha-soak: bringing h%d back: %s\n", i, st.message().c_str());
      return false;
    }
  }
  StartAgent(c, i);
  return true;
}

// A failed drill's evidence outlives the cluster's temporary directory: every host's agent
// logs and load-client reports, and the drill's own output, copied to /var/tmp.
std::string KeepEvidence(const Cluster& c, int drill) {
  const std::string to = "/var/tmp/ferry-ha-soak-" + std::to_string(::getpid()) + "/drill" + std::to_string(drill);
  std::string cmd = "mkdir -p '" + to + "'";
  for (int i = 0; i < c.tc->size(); ++i) {
    cmd += "; mkdir -p '" + to + "/h" + std::to_string(i) + "'; cp '" + c.tc->host_dir(i) + "'/*.err '" +
           c.tc->host_dir(i) + "'/*.json '" + to + "/h" + std::to_string(i) + "/' 2>/dev/null";
  }
  cmd += "; cp '" + c.tc->dir() + "/drill" + std::to_string(drill - 1) + "'.* '" + to + "/' 2>/dev/null; true";
  (void)RunCommand({"sh", "-c", cmd}, c.tc->dir() + "/keep", 30000);
  return to;
}

// What every agent says of the VMs when protection did not come back: per host, its local
// instances, its protection bookkeeping, what it is busy with and its last events, one
// compact block each (the end of a CI log is what survives).
std::string Diagnose(const Cluster& c) {
  std::string out;
  for (int i = 0; i < c.tc->size(); ++i) {
    const std::string h = "h" + std::to_string(i);
    json s = HaStatus(c, h);
    if (!s.is_object()) {
      out += h + ": no answer\n";
      continue;
    }
    out += h + ": local " + s.value("local", json::array()).dump() + "\n  protection " +
           s.value("protection", json::object()).dump() + " busy " + s.value("busy", json::array()).dump() + "\n";
    const json ev = s.value("events", json::array());
    for (size_t k = ev.size() > 10 ? ev.size() - 10 : 0; k < ev.size(); ++k) {
      out += "  " + std::to_string(ev[k].value("t_ms", uint64_t{0}) % 1000000) + " " + ev[k].value("kind", "") + " " +
             ev[k].value("vm", "") + " " + ev[k].value("detail", "") + "\n";
    }
  }
  return out;
}

int Run(const Options& o) {
  Cluster c;
  std::string why;
  if (!StartCluster(&c, 2, &why)) {
    std::fprintf(stderr, "ha-soak: %s\n", why.c_str());
    return 1;
  }
  const uint32_t seed = o.seed ? o.seed : static_cast<uint32_t>(MonotonicNs());
  std::mt19937 rng(seed);
  std::fprintf(stderr, "ha-soak: seed %u\n", seed);
  std::map<pid_t, Series> series;
  const uint64_t t0 = MonotonicNs();
  auto now_s = [&] { return (MonotonicNs() - t0) / 1e9; };
  double next_sample = 0, next_drill = o.drill_every_s;
  int drills = 0, failed = 0, unrestored = 0, retried = 0;
  uint64_t lost = 0;
  while (!g_stop && now_s() < o.duration_s) {
    if (now_s() >= next_sample) {
      Sample(c, now_s(), &series);
      next_sample += o.sample_s;
    }
    if (now_s() < next_drill) {
      ::usleep(200 * 1000);
      continue;
    }
    next_drill = now_s() + o.drill_every_s;
    if (!AllProtected(c, 2, 120000)) {
      std::fprintf(stderr, "ha-soak: not every VM protected before drill %d\n%s%s", drills + 1, Logs(c).c_str(),
                   Diagnose(c).c_str());
      ++unrestored;
      continue;
    }
    const std::string fault = o.faults[rng() % o.faults.size()];
    const std::string vm = rng() % 2 ? "kv1" : "kv0";
    const bool vm_target = fault == "kill-vm" || fault == "kill-standby" || fault == "cut-replication" || fault == "stop-vm";
    std::string owner;
    auto drill = [&] {
      owner = VmOf(HaStatus(c), vm).value("owner", "");
      std::vector<std::string> args = {"drill", "--config", c.config, "--json", "--vm", vm, "--" + fault, vm_target ? vm : owner};
      if (fault == "stop-agent" || fault == "stop-vm") args.insert(args.end(), {"--stop-s", "5"});
      if (fault == "cut-replication") args.insert(args.end(), {"--heal-after-s", "5"});
      return RunFerry(args, c.tc->dir() + "/drill" + std::to_string(drills), 240000);
    };
    auto r = drill();
    // A drill that refused to start (the VM was briefly unprotected, or its owner changed,
    // between the harness's look and the drill's: a standby moving back to its preferred
    // host) injected nothing: once every VM is protected again it is tried once more.
    const bool refused = r.code != 0 && !LastJsonLine(r.out).is_object() &&
                         (r.err.find("is not protected right now") != std::string::npos ||
                          r.err.find(", not on ") != std::string::npos);
    if (refused && AllProtected(c, 2, 120000)) {
      std::fprintf(stderr, "ha-soak: drill %d refused to start, tried again: %s", drills + 1, r.err.c_str());
      ++retried;
      r = drill();
    }
    ++drills;
    json card = LastJsonLine(r.out);
    if (!card.is_object()) card = {{"error", r.err}};
    card["drill"] = drills;
    card["t_s"] = now_s();
    const bool ok = r.code == 0 && card.value("ok", false);
    failed += !ok;
    if (!ok) card["kept"] = KeepEvidence(c, drills);
    lost += card.value("lost_writes", uint64_t{0});
    // The host or agent the fault took down comes back, and protection with it. Only if the
    // drill got as far as its fault (a scorecard names it): reviving a host that was never
    // killed restarted its live Corosync and started a second agent, a fault of our own.
    const int h = HostOf(owner);
    const bool injected = card.contains("fault");
    bool revived = true;
    if (h >= 0 && injected && (fault == "kill-host" || fault == "kill-host-mid-move")) revived = Revive(&c, h, true);
    if (h >= 0 && injected && fault == "kill-agent") revived = Revive(&c, h, false);
    const uint64_t t_back = MonotonicNs();
    const bool restored = revived && AllProtected(c, 2, 180000);
    card["protection_restored"] = restored;
    card["protection_restored_s"] = (MonotonicNs() - t_back) / 1e9;
    unrestored += !restored;
    if (!restored) {
      if (ok) card["kept"] = KeepEvidence(c, drills);
      const json st = HaStatus(c);
      const json vms = st.is_object() && st.contains("cluster") ? st["cluster"].value("vms", json::array()) : json();
      std::fprintf(stderr, "ha-soak: protection not back 180 s after drill %d (%s %s): %s\n%s", drills, fault.c_str(),
                   vm.c_str(), vms.dump().c_str(), Diagnose(c).c_str());
    }
    std::printf("%s\n", card.dump().c_str());
    std::fflush(stdout);
  }
  // The verdict on resources. Each process is judged after a warm-up of its own (a standby
  // started by the last drill is as new as the cluster was at the start): its samples from
  // --warmup-s after its first one on, at least three, spanning three sample periods. RSS: the
  // fitted growth over that window, under 8 MiB, plus the guest's RAM for a VMM or a standby
  // (first touches of guest pages and of a replica filling up are not leaks; measured on a KVM
  // test cluster: a standby grew 91 MiB in its first minutes while its 64 MiB replica filled).
  // Counts: the median of the window's last third against its first third, so that a
  // transient IPC mapping or connection at one sample (Corosync's, for each quorumtool call) is
  // not taken for growth.
  json grew = json::array();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  for (const auto& [pid, s] : series) {
    if (s.t.empty()) continue;
    std::vector<size_t> idx;
    for (size_t i = 0; i < s.t.size(); ++i) {
      if (s.t[i] >= s.t.front() + o.warmup_s) idx.push_back(i);
    }
    if (idx.size() < 3 || s.t[idx.back()] - s.t[idx.front()] < o.sample_s * 3) continue;
    std::vector<double> t, rss;
    for (size_t i : idx) {
      t.push_back(s.t[i]);
      rss.push_back(s.rss[i]);
    }
    const double growth_kib = bench::Slope(t, rss) * (t.back() - t.front());
    const bool guest = s.what == "vmm" || s.what == "standby";
    // A standby also keeps its staging buffer's capacity across checkpoints, up to
    // StagedPages::kKeptBytes (never more than the guest): measured in the first KVM hour, a
    // standby grew 96 MiB, over the 72 MiB allowed before this was counted.
    const double staged_kib = std::min<double>(migrate::StagedPages::kKeptBytes / 1024.0, kGuestMib * 1024.0);
    const double allowed_kib = 8192 + (guest ? kGuestMib * 1024.0 : 0) + (s.what == "standby" ? staged_kib : 0);
    auto third = [&](const std::vector<double>& v, bool last) {
      const size_t n = std::max<size_t>(1, idx.size() / 3);
      std::vector<double> part;
      for (size_t k = 0; k < n; ++k) part.push_back(v[idx[last ? idx.size() - 1 - k : k]]);
      return median(part);
    };
    const double maps0 = third(s.maps, false), maps1 = third(s.maps, true);
    const double thr0 = third(s.threads, false), thr1 = third(s.threads, true);
    const double fds0 = third(s.fds, false), fds1 = third(s.fds, true);
    // A standby may be promoted during the soak (a drill killed its primary): its NIC, disk and
    // replication streams open then, once (measured: fds 32 -> 45, threads 16 -> 17). That
    // step is allowed beside the growth bound; its cmdline still says "standby".
    const double step = s.what == "standby" ? 2 : 1;
    const bool flat_counts = maps1 <= maps0 + 16 * step && thr1 <= thr0 + 4 * step && fds1 <= fds0 + 8 * step;
    if (growth_kib > allowed_kib || !flat_counts) {
      grew.push_back({{"host", s.host}, {"what", s.what}, {"pid", pid}, {"rss_growth_kib", growth_kib},
                      {"rss_allowed_kib", allowed_kib}, {"maps", {maps0, maps1}}, {"threads", {thr0, thr1}},
                      {"fds", {fds0, fds1}}});
    }
  }
  const bool pass = !g_stop && failed == 0 && lost == 0 && unrestored == 0 && grew.empty();
  std::printf("%s\n", json{{"verdict", pass ? "pass" : "fail"}, {"seed", seed}, {"duration_s", now_s()}, {"drills", drills}, {"failed", failed},
                           {"lost_writes", lost}, {"protection_not_restored", unrestored}, {"refused_and_retried", retried},
                           {"processes_that_grew", grew}}
                          .dump()
                          .c_str());
  std::fflush(stdout);
  return pass ? 0 : 1;
}

std::vector<std::string> Split(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  for (std::string t; std::getline(ss, t, ',');) out.push_back(t);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    try {
      if (k == "--duration-s") o.duration_s = std::stod(v);
      else if (k == "--drill-every-s") o.drill_every_s = std::stod(v);
      else if (k == "--sample-s") o.sample_s = std::stod(v);
      else if (k == "--warmup-s") o.warmup_s = std::stod(v);
      else if (k == "--seed") o.seed = static_cast<uint32_t>(std::stoul(v));
      else if (k == "--faults") o.faults = Split(v);
      else throw std::invalid_argument(k);
    } catch (const std::exception&) {
      std::fprintf(stderr,
                   "usage: ha_soak_bench [--duration-s 3600] [--drill-every-s 180] [--sample-s 10] [--warmup-s 300] "
                   "[--seed N] [--faults a,b,...]\n");
      return 2;
    }
  }
  if ((argc - 1) % 2 != 0 || o.faults.empty() || !(o.duration_s > 0) || !(o.sample_s > 0) || !(o.drill_every_s > 0)) {
    std::fprintf(stderr, "ha-soak: bad arguments\n");
    return 2;
  }
  if (geteuid() != 0 || !HaveKvm()) {
    std::fprintf(stderr, "ha-soak: needs root and /dev/kvm\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return Run(o);
}
