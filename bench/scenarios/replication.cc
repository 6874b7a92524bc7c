// bench/replication: what continuous replication costs a running guest. One run measures,
// side by side, the same guest unreplicated and replicated (to a standby on a second
// namespace host) at each epoch length:
//   dirtier  as fast as it can over a small working set (memory-write throughput, MB/s)
//   kvstore  under an open-loop load client (answered requests per second)
// One JSON line per measurement:
//   {"workload":"dirtier"|"kvstore","epoch_ms":N|null,"throughput":X,"unit":"...",
//    "pause_ms_p50":X,"pause_ms_max":X,"lag_ms_p50":X,...}
// and the medians (with the loss against unreplicated) on stderr. Needs root and /dev/kvm.
//   replication_bench [--runs 3] [--seconds 5] [--epochs 10,25,100] [--wss-mib 8] [--rate 60000]
//                     [--workloads dirtier,kvstore]
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <sstream>
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
  int seconds = 5;
  std::vector<int> epochs = {10, 25, 100};
  int wss_mib = 8;
  int rate = 60000;  // near what one kvstore vCPU and the client can do here: a saturating load
  std::vector<std::string> workloads = {"dirtier", "kvstore"};
};

// Thrown, not exit(): unwinding stops the VMs and removes the namespaces and scratch files.
[[noreturn]] void Die(const std::string& what) { throw std::runtime_error(what); }

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// The dirtier's own counters: pages written and its clock, from its latest report.
std::pair<double, double> DirtierCounters(const std::string& sock, uint64_t after_seq) {
  std::pair<double, double> out{0, 0};
  e2e::WaitUntil(
      [&] {
        auto r = e2e::Api(sock, {{"op", "status"}});
        if (!r.ok() || (*r)["report"]["seq"].get<uint64_t>() <= after_seq) return false;
        auto f = (*r)["report"]["fields"];
        if (!f.contains("elapsed_us")) return false;
        out = {std::stod(f["pages"].get<std::string>()), std::stod(f["elapsed_us"].get<std::string>())};
        return true;
      },
      5000);
  return out;
}

uint64_t ReportSeq(const std::string& sock) {
  auto r = e2e::Api(sock, {{"op", "status"}});
  return r.ok() ? (*r)["report"]["seq"].get<uint64_t>() : 0;
}

class Scenario {
 public:
  Scenario(const Options& o, const std::string& workload) : o_(o), workload_(workload) {}
  void Start();
  // One measurement; epoch_ms 0 = unreplicated.
  json Measure(int epoch_ms, int run, int index);
  void Stop();

 private:
  std::string MakeDisk(const std::string& name) {
    std::string path = dir_.File(name);
    std::ofstream(path).close();
    if (::truncate(path.c_str(), 16 << 20) != 0) Die("cannot create " + path);
    return path;
  }
  double Throughput(json* extra);

  const Options& o_;
  const std::string workload_;
  std::unique_ptr<TestHosts> hosts_;
  e2e::TempDir dir_;
  std::unique_ptr<e2e::Process> vm_;
  std::string key_, net_, sock_;
};

void Scenario::Start() {
  bool kv = workload_ == "kvstore";
  auto hosts = TestHosts::Create(2, {.guest_network = kv});
  if (!hosts.ok()) Die(hosts.status().message());
  hosts_ = std::move(hosts).value();
  key_ = e2e::WriteKey(dir_, "key", "replication-bench-key");
  net_ = std::string("ftap0,bridge=") + TestHosts::kGuestBridge;
  sock_ = dir_.File("p.sock");
  std::vector<std::string> argv = {e2e::FerryBin(), "run", e2e::GuestPath(workload_), "--mem", "256M", "--api", sock_};
  if (kv) {
    for (const auto& a : {std::string("--disk"), MakeDisk("a.img"), std::string("--net"), net_, std::string("--"),
                          "ip=" + TestHosts::guest_address(0), std::string("keys=1024")}) {
      argv.push_back(a);
    }
  } else {
    for (const auto& a : {std::string("--"), std::string("rate_mbps=max"), "wss_mib=" + std::to_string(o_.wss_mib)}) {
      argv.push_back(a);
    }
  }
  vm_ = std::make_unique<e2e::Process>(hosts_->In(0, argv), dir_.File("vm"));
  const char* field = kv ? "puts" : "elapsed_us";
  if (!e2e::WaitUntil([&] { return e2e::WaitForReport(sock_, field, 100).ok(); }, 30000)) {
    Die(workload_ + " did not come up: " + vm_->Stderr());
  }
}

double Scenario::Throughput(json* extra) {
  if (workload_ == "dirtier") {
    auto a = DirtierCounters(sock_, ReportSeq(sock_));
    std::this_thread::sleep_for(std::chrono::seconds(o_.seconds));
    auto b = DirtierCounters(sock_, ReportSeq(sock_));
    if (b.second <= a.second) Die("the dirtier stopped reporting");
    return (b.first - a.first) * 4096 / (b.second - a.second);  // bytes per us = MB/s
  }
  auto c = e2e::RunCommand(hosts_->InClient({e2e::FerryBin(), "kv-load", "--server", TestHosts::guest_address(0) + ":7000",
                                             "--rate", std::to_string(o_.rate), "--keys", "1024", "--duration-s",
                                             std::to_string(o_.seconds), "--timeout-ms", "2000", "--json"}),
                           dir_.File("client"), (o_.seconds + 60) * 1000);
  json r = e2e::LastJsonLine(c.out);
  if (!r.is_object()) Die("no result from the load client: " + c.err);
  (*extra)["latency_p50_ms"] = r["latency_p50_ms"];
  (*extra)["latency_p99_ms"] = r["latency_p99_ms"];
  (*extra)["lost_puts"] = r["lost_puts"];
  (*extra)["offered_rate"] = o_.rate;
  double answered = r["acked_puts"].get<double>() + r["gets_answered"].get<double>();
  return answered * 1000 / r["duration_ms"].get<double>();
}

json Scenario::Measure(int epoch_ms, int run, int index) {
  json line = {{"workload", workload_}, {"epoch_ms", epoch_ms ? json(epoch_ms) : json(nullptr)},
               {"unit", workload_ == "dirtier" ? "MB/s" : "req/s"}, {"run", run}};
  std::unique_ptr<e2e::Process> standby;
  if (epoch_ms) {
    std::string listen = hosts_->address(1) + ":" + std::to_string(4450 + index);
    std::vector<std::string> argv = {e2e::FerryBin(), "standby", "--listen", listen, "--key", key_};
    if (workload_ == "kvstore") {
      for (const auto& a : {std::string("--disk"), MakeDisk("b" + std::to_string(index) + ".img"), std::string("--net"), net_}) {
        argv.push_back(a);
      }
    }
    standby = std::make_unique<e2e::Process>(hosts_->In(1, argv), dir_.File("standby" + std::to_string(index)));
    if (!e2e::WaitUntil([&] { return standby->Stderr().find("listening") != std::string::npos; }, 10000)) {
      Die("the standby did not start: " + standby->Stderr());
    }
    auto rep = e2e::RunCommand(hosts_->In(0, {e2e::FerryBin(), "replicate", "--api", sock_, "--to", listen, "--key", key_,
                                              "--interval-ms", std::to_string(epoch_ms), "--json"}),
                               dir_.File("rep"), 120000);
    if (rep.code != 0) Die("replicate failed: " + rep.err + standby->Stderr());
    std::this_thread::sleep_for(std::chrono::seconds(1));  // past the first, larger checkpoints
  }
  json extra = json::object();
  line["throughput"] = Throughput(&extra);
  line.update(extra);
  if (epoch_ms) {
    auto st = e2e::Api(sock_, {{"op", "status"}});
    if (!st.ok()) Die("status: " + st.status().message());
    json rep = (*st)["replication"];
    if (rep["state"] != "protected") Die("replication is " + rep["state"].get<std::string>() + ": " + rep["error"].get<std::string>());
    for (const char* k : {"pause_ms_p50", "pause_ms_max", "lag_ms_p50", "ship_ms_p50", "epochs", "interval_ms", "throttle",
                          "lagging_epochs"}) {
      line[k] = rep[k];
    }
    auto stop = e2e::RunCommand(hosts_->In(0, {e2e::FerryBin(), "replicate", "--api", sock_, "--stop"}), dir_.File("stop"));
    if (stop.code != 0) Die("replicate --stop failed: " + stop.err);
    standby->Wait(10000);
  } else {
    line["pause_ms_p50"] = line["pause_ms_max"] = line["lag_ms_p50"] = nullptr;
  }
  return line;
}

void Scenario::Stop() {
  (void)e2e::Api(sock_, {{"op", "stop"}, {"force", true}});
  vm_->Wait(20000);
}

}  // namespace
}  // namespace ferry::bench

int Main(int argc, char** argv) {
  using namespace ferry::bench;
  Options o;
  if (argc % 2 == 0) Die("options take a value");
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--runs") o.runs = std::stoi(v);
    else if (k == "--seconds") o.seconds = std::stoi(v);
    else if (k == "--wss-mib") o.wss_mib = std::stoi(v);
    else if (k == "--rate") o.rate = std::stoi(v);
    else if (k == "--workloads") o.workloads = Split(v);
    else if (k == "--epochs") {
      o.epochs.clear();
      for (const auto& e : Split(v)) o.epochs.push_back(std::stoi(e));
    } else {
      Die("unknown option " + k + " (--runs --seconds --epochs --wss-mib --rate --workloads)");
    }
  }
  if (o.runs < 1 || o.seconds < 2 || o.epochs.empty()) Die("--runs >= 1, --seconds >= 2, at least one epoch");
  // (workload, epoch) -> throughputs and pauses over the runs
  std::map<std::pair<std::string, int>, std::vector<double>> tput, pause, lag;
  for (int run = 0; run < o.runs; ++run) {
    for (const auto& w : o.workloads) {
      if (w != "dirtier" && w != "kvstore") Die("unknown workload " + w);
      Scenario s(o, w);
      s.Start();
      std::vector<int> configs = {0};
      configs.insert(configs.end(), o.epochs.begin(), o.epochs.end());
      for (size_t i = 0; i < configs.size(); ++i) {
        json j = s.Measure(configs[i], run, static_cast<int>(run * 16 + i));
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        tput[{w, configs[i]}].push_back(j["throughput"].get<double>());
        if (configs[i]) {
          pause[{w, configs[i]}].push_back(j["pause_ms_p50"].get<double>());
          lag[{w, configs[i]}].push_back(j["lag_ms_p50"].get<double>());
        }
      }
      s.Stop();
    }
  }
  for (const auto& w : o.workloads) {
    double base = Median(tput[{w, 0}]);
    std::fprintf(stderr, "%s unreplicated: %.1f (median of %d)\n", w.c_str(), base, o.runs);
    for (int e : o.epochs) {
      double t = Median(tput[{w, e}]);
      std::fprintf(stderr, "%s at %d ms epochs: %.1f (%.1f%% loss), pause p50 %.2f ms, lag p50 %.1f ms\n", w.c_str(), e, t,
                   base > 0 ? 100 * (1 - t / base) : 0, Median(pause[{w, e}]), Median(lag[{w, e}]));
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replication bench: %s\n", e.what());
    return 1;
  }
}
