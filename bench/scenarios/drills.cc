// bench/drills: N failover drills in a row on a 3-host Corosync test cluster, one
// `ferry drill --json` scorecard per line on stdout (with the Corosync token setting added),
// then a summary line per token setting: RTO median and max, detection median.
//
//   build/bench/drills_bench [--drills 10] [--tokens 300,1000] [--fault kill-host|kill-vm]
//
// After each kill-host drill the dead host is brought back (link up, Corosync and its agent
// restarted) and the next drill waits until the VM is protected again, then kills the host
// it runs on now. Everything created is removed on every exit path.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "e2e_util.h"
#include "ferry/base/clock.h"
#include "ha_cluster_util.h"
#include "test_cluster.h"

using namespace ferry;
using namespace ferry::e2e;
using nlohmann::json;

namespace {

// SIGINT/SIGTERM stop the run between drills, so the cluster is torn down on the way out.
volatile sig_atomic_t g_stop = 0;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int RunToken(int token_ms, int drills, const std::string& fault) {
  Cluster c;
  std::string why;
  if (!StartCluster(&c, 1, &why, {}, token_ms)) {
    std::fprintf(stderr, "drills: %s\n", why.c_str());
    return 1;
  }
  TestCluster& t = *c.tc;
  auto kv0 = [&] { return VmOf(HaStatus(c), "kv0"); };
  std::vector<double> rto, detect;
  int failures = 0;
  for (int d = 0; d < drills && !g_stop; ++d) {
    // Protected, and settled: the same standby for 3 s (a host that came back takes its
    // place as the preferred backup first, which briefly unprotects the VM).
    std::string standby;
    uint64_t since = 0;
    auto settled = [&] {
      json v = kv0();
      std::string now = v.value("replication", "") == "protected" ? v.value("standby_host", "") : "";
      if (now.empty() || now != standby) {
        standby = now;
        since = MonotonicNs();
        return false;
      }
      return MonotonicNs() - since > 3000000000ull;
    };
    if (!WaitUntil(settled, 90000)) {
      std::fprintf(stderr, "drills: kv0 not protected before drill %d; kv0 in ha status: %s\n%s", d + 1,
                   kv0().dump().c_str(), Logs(c).c_str());
      return 1;
    }
    std::string owner = kv0().value("owner", "");
    int host = owner.empty() ? 0 : owner[1] - '0';
    std::vector<std::string> args = {"drill", "--config", c.config, "--json"};
    if (fault == "kill-vm") {
      args.insert(args.end(), {"--kill-vm", "kv0"});
    } else {
      args.insert(args.end(), {"--kill-host", owner});
    }
    auto r = RunFerry(args, t.dir() + "/drill" + std::to_string(d), 120000);
    json card = LastJsonLine(r.out);
    if (!card.is_object()) {
      std::fprintf(stderr, "drills: drill %d failed: %s\n", d + 1, r.err.c_str());
      ++failures;
    } else {
      card["token_ms"] = token_ms;
      card["drill"] = d + 1;
      std::printf("%s\n", card.dump().c_str());
      std::fflush(stdout);
      rto.push_back(card.value("rto_ms", 0.0));
      detect.push_back(static_cast<double>(card.value("detect_ms", int64_t{0})));
      if (r.code != 0) ++failures;
    }
    if (fault == "kill-host") {
      // Bring the host back: link, Corosync, agent (it rejoins and becomes the backup).
      // The agent waits for its Corosync by itself; waiting for quorum here keeps a slow
      // rejoin out of the next drill's protection wait and says which step failed.
      Status st = t.Heal(host);
      if (st.ok()) st = t.RestartCorosync(host);
      if (st.ok()) st = t.WaitQuorate(host, true, 30000);
      if (!st.ok()) {
        std::fprintf(stderr, "drills: bringing h%d back after drill %d: %s\n", host, d + 1, st.message().c_str());
        return 1;
      }
      StartAgent(&c, host);
    }
  }
  json summary = {{"summary", true}, {"fault", fault}, {"token_ms", token_ms}, {"drills", rto.size()},
                  {"failed", failures}, {"rto_ms_median", Median(rto)},
                  {"rto_ms_max", rto.empty() ? 0 : *std::max_element(rto.begin(), rto.end())},
                  {"detect_ms_median", Median(detect)}};
  std::printf("%s\n", summary.dump().c_str());
  std::fflush(stdout);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int drills = 10;
  std::vector<int> tokens = {300, 1000};
  std::string fault = "kill-host";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--drills") {
      drills = std::stoi(v);
    } else if (k == "--tokens") {
      tokens.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) tokens.push_back(std::stoi(t));
    } else if (k == "--fault") {
      fault = v;
    } else {
      std::fprintf(stderr, "usage: drills_bench [--drills N] [--tokens 300,1000] [--fault kill-host|kill-vm]\n");
      return 2;
    }
  }
  if (geteuid() != 0 || !HaveKvm()) {
    std::fprintf(stderr, "drills: needs root and /dev/kvm\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  int rc = 0;
  for (int t : tokens) {
    if (!g_stop) rc |= RunToken(t, drills, fault);
  }
  if (g_stop) {
    std::fprintf(stderr, "drills: stopped by a signal\n");
    return 1;
  }
  return rc;
}
