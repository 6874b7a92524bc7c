// bench/kvstore-migrate: what a service's clients see when it is live-migrated. kvstore runs
// on host 0 of a two-host namespace topology (disk on shared storage, NIC on the hosts'
// bridge); the load client sends GET/PUT at a fixed rate from the client namespace while the
// VM migrates to host 1. Per run one JSON line:
//   {"acked_puts":N,"lost_puts":N,"client_gap_ms":X,"downtime_ms":X,...}
// and the medians on stderr. Needs root and /dev/kvm.
//   kvstore_migrate_bench [--runs 3] [--rate 1000] [--seconds 8] [--mem 256M] [--keys 1024]
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "scenario_util.h"
#include "test_hosts.h"

namespace ferry::bench {
namespace {

using nlohmann::json;
using e2e::TestHosts;

struct Options {
  int runs = 3;
  int rate = 1000;
  int seconds = 8;
  std::string mem = "256M";
  int keys = 1024;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "kvstore-migrate: %s\n", what.c_str());
  std::exit(1);
}

json OneRun(const Options& o, int run) {
  auto hosts = TestHosts::Create(2, {.guest_network = true});
  if (!hosts.ok()) Die(hosts.status().message());
  e2e::TempDir dir;
  std::string disk = dir.File("kv.img");
  std::ofstream(disk).close();
  if (::truncate(disk.c_str(), 16 << 20) != 0) Die("cannot create the disk image");
  std::string key = e2e::WriteKey(dir, "key", "kvstore-migrate-bench-key");
  const std::string net = std::string("ftap0,bridge=") + TestHosts::kGuestBridge;
  const std::string server = TestHosts::guest_address(0) + ":7000";

  e2e::Process vm((*hosts)->In(0, {e2e::FerryBin(), "run", e2e::GuestPath("kvstore"), "--mem", o.mem, "--disk", disk,
                                   "--net", net, "--api", dir.File("src.sock"), "--",
                                   "ip=" + TestHosts::guest_address(0), "keys=" + std::to_string(o.keys)}),
                  dir.File("src"));
  e2e::Process dst((*hosts)->In(1, {e2e::FerryBin(), "incoming", "--listen", (*hosts)->address(1) + ":4430", "--key",
                                    key, "--api", dir.File("dst.sock")}),
                   dir.File("dst"));
  if (!e2e::WaitUntil([&] { return e2e::WaitForReport(dir.File("src.sock"), "puts", 100).ok(); }, 30000)) {
    Die("kvstore did not come up: " + vm.Stderr() + vm.Stdout());
  }
  e2e::Process client((*hosts)->InClient({e2e::FerryBin(), "kv-load", "--server", server, "--rate",
                                          std::to_string(o.rate), "--keys", std::to_string(o.keys), "--duration-s",
                                          std::to_string(o.seconds), "--json"}),
                      dir.File("client"));
  // Migrate in the middle of the client's run.
  std::this_thread::sleep_for(std::chrono::milliseconds(o.seconds * 1000 / 2 - 500));
  auto m = e2e::RunCommand((*hosts)->In(0, {e2e::FerryBin(), "migrate", "--api", dir.File("src.sock"), "--to",
                                            (*hosts)->address(1) + ":4430", "--key", key, "--json"}),
                           dir.File("mig"), 120000);
  if (m.code != 0) Die("migration failed: " + m.err + dst.Stderr());
  json mig = e2e::LastJsonLine(m.out);
  if (client.Wait(o.seconds * 1000 + 60000) < 0) Die("the load client did not finish");
  json c = e2e::LastJsonLine(client.Stdout());
  if (!c.is_object()) Die("no result from the load client: " + client.Stdout() + client.Stderr());
  (void)e2e::Api(dir.File("dst.sock"), {{"op", "stop"}, {"force", true}});
  dst.Wait(20000);
  vm.Wait(20000);
  return {{"acked_puts", c["acked_puts"]},
          {"lost_puts", c["lost_puts"]},
          {"client_gap_ms", c["client_gap_ms"]},
          {"downtime_ms", mig["downtime_ms"]},
          {"guest_pause_ms", mig.value("guest_pause_ms", json())},
          {"migration_total_ms", mig["total_ms"]},
          {"pause_ms", mig.value("pause_ms", json())},
          {"stop_copy_parts_ms", mig.value("stop_copy_parts_ms", json())},
          {"stale_reads", c["stale_reads"]},
          {"unanswered", c["unanswered"]},
          {"rate", o.rate},
          {"mem", o.mem},
          {"run", run}};
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  using namespace ferry::bench;
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--runs") o.runs = std::stoi(v);
    else if (k == "--rate") o.rate = std::stoi(v);
    else if (k == "--seconds") o.seconds = std::stoi(v);
    else if (k == "--mem") o.mem = v;
    else if (k == "--keys") o.keys = std::stoi(v);
    else Die("unknown option " + k + " (--runs --rate --seconds --mem --keys)");
  }
  if (argc % 2 == 0) Die("options take a value: --runs N --rate N --seconds N --mem SIZE --keys N");
  if (o.seconds < 3 || o.runs < 1 || o.rate < 1) Die("--seconds must be >= 3, --runs and --rate >= 1");
  std::vector<double> gaps, downtimes, lost;
  for (int r = 0; r < o.runs; ++r) {
    json j = OneRun(o, r);
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    gaps.push_back(j["client_gap_ms"].get<double>());
    downtimes.push_back(j["downtime_ms"].get<double>());
    lost.push_back(j["lost_puts"].get<double>());
  }
  std::fprintf(stderr, "kvstore-migrate: %d runs at %d req/s: client gap median %.1f ms (max %.1f), downtime median %.1f ms, "
               "lost PUTs max %.0f\n", o.runs, o.rate, Median(gaps), *std::max_element(gaps.begin(), gaps.end()),
               Median(downtimes), *std::max_element(lost.begin(), lost.end()));
  return 0;
}
