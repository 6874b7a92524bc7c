// bench/dirtylog: what dirty tracking costs, measured side by side in one run.
//   harvest:  one harvest of a 1 GiB guest with 0%, 1% and 100% of its pages dirtied since the
//             last one, bitmap (manual protect) and rings, in ms per GiB (median)
//   tax:      the dirtier's own throughput (CPU-bound, rate=max) untracked, and tracked by the
//             bitmap and by rings harvested every 100 ms
//   throttle: measured dirty rate of a CPU-bound dirtier at 0/50/90% throttle
// One JSON object per line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/clock.h"
#include "ferry/dirtylog/dirty_rate.h"
#include "ferry/dirtylog/tracker.h"
#include "ferry/hypervisor/kvm_dirty_log.h"
#include "ferry/hypervisor/vm.h"
#include "scenario_util.h"

namespace {

using ferry::MonotonicNs;
using ferry::bench::Median;
using ferry::bench::WaitForField;
using nlohmann::json;
namespace hv = ferry::hypervisor;
namespace dl = ferry::dirtylog;

std::string g_build = "build";




void Stop(std::unique_ptr<hv::Vm>& vm) {
  vm->Stop();
  vm->WaitForExit();
}

void BenchHarvest(int runs) {
  const uint64_t mem = 1ull << 30;
  for (uint32_t ring : {0u, 65536u}) {
    for (int pct : {0, 1, 100}) {
      auto vm = ferry::bench::BootGuest(g_build, "dirtier", mem, 2, "burst_pct=" + std::to_string(pct), ring);
      if (!WaitForField(*vm, "burst_seq", "0")) std::exit(1);
      auto tracker = dl::DirtyTracker::Start(*vm);
      if (!tracker.ok()) std::exit(1);
      (void)(*tracker)->Harvest();  // all of RAM; arms tracking
      // Warm-up burst: the first write to each page also pays for populating it.
      uint64_t seq = vm->RequestVerify();
      WaitForField(*vm, "burst_seq", std::to_string(seq));
      (void)(*tracker)->Harvest();
      std::vector<double> ms, fetch_ms, clear_ms;
      std::vector<double> pages;
      for (int r = 0; r < runs; ++r) {
        if (pct > 0) {
          seq = vm->RequestVerify();
          if (!WaitForField(*vm, "burst_seq", std::to_string(seq))) std::exit(1);
        }
        auto set = (*tracker)->Harvest();
        if (!set.ok()) std::exit(1);
        const auto& st = (*tracker)->last_stats();
        ms.push_back(st.total_ns / 1e6);
        fetch_ms.push_back(st.fetch_ns / 1e6);
        clear_ms.push_back(st.clear_ns / 1e6);
        pages.push_back(static_cast<double>(set->Count()));
      }
      const double gib = mem / double(1ull << 30);
      std::printf("%s\n", json{{"bench", "harvest"},
                               {"source", ring ? "ring" : "bitmap"},
                               {"ring_entries", ring},
                               {"dirty_pct", pct},
                               {"mem_gib", gib},
                               {"runs", runs},
                               {"pages_median", Median(pages)},
                               {"ms_per_gib", Median(ms) / gib},
                               {"fetch_ms", Median(fetch_ms)},
                               {"clear_ms", Median(clear_ms)},
                               {"ring_full_exits", vm->dirty_log().ring_full_exits()}}
                              .dump()
                              .c_str());
      Stop(vm);
    }
  }
}

// Guest-reported dirtier throughput over `seconds`, optionally while a tracker harvests.
double DirtierMbps(hv::Vm& vm, dl::DirtyTracker* tracker, double seconds) {
  auto pages_now = [&] { return std::stod(vm.LastReport().fields.at("pages")); };
  WaitForField(vm, "pages", "");
  uint64_t seq0 = vm.LastReport().seq;
  while (vm.LastReport().seq == seq0) {  // align to a fresh report
    if (tracker) (void)tracker->Harvest();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto r0 = vm.LastReport();
  double p0 = std::stod(r0.fields.at("pages"));
  uint64_t end = MonotonicNs() + static_cast<uint64_t>(seconds * 1e9);
  while (MonotonicNs() < end) {
    if (tracker) (void)tracker->Harvest();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  uint64_t seq1 = vm.LastReport().seq;
  while (vm.LastReport().seq == seq1) {
    if (tracker) (void)tracker->Harvest();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto r1 = vm.LastReport();
  return (pages_now() - p0) * 4096 / ((r1.host_time_ns - r0.host_time_ns) / 1e3);
}

void BenchTax(int runs) {
  const std::string args = "rate_mbps=max wss_mib=768";
  for (const char* mode : {"off", "bitmap", "ring"}) {
    std::vector<double> mbps;
    for (int r = 0; r < runs; ++r) {
      auto vm = ferry::bench::BootGuest(g_build, "dirtier", 1ull << 30, 2, args, std::string(mode) == "ring" ? 65536 : 0);
      std::unique_ptr<dl::DirtyTracker> tracker;
      if (std::string(mode) != "off") {
        auto t = dl::DirtyTracker::Start(*vm);
        if (!t.ok()) std::exit(1);
        tracker = std::move(t).value();
      }
      mbps.push_back(DirtierMbps(*vm, tracker.get(), 3.0));
      tracker.reset();
      Stop(vm);
    }
    std::printf("%s\n", json{{"bench", "tracking_tax"}, {"tracking", mode}, {"guest", "dirtier rate=max wss=768MiB 2 vCPUs"},
                             {"runs", runs}, {"dirtier_mb_per_s", Median(mbps)}}
                            .dump()
                            .c_str());
  }
}

void BenchThrottle(int runs) {
  auto vm = ferry::bench::BootGuest(g_build, "dirtier", 1ull << 30, 2, "rate_mbps=max wss_mib=768", 0);
  WaitForField(*vm, "pages", "");
  for (uint32_t pct : {0u, 50u, 90u}) {
    if (!vm->SetThrottle(-1, pct).ok()) std::exit(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::vector<double> mbps;
    for (int r = 0; r < runs; ++r) {
      auto rate = dl::MeasureDirtyRate(*vm, 1.0, 0.1);
      if (!rate.ok()) std::exit(1);
      mbps.push_back(rate->mb_per_s);
    }
    std::printf("%s\n", json{{"bench", "throttle"}, {"throttle_pct", pct}, {"guest", "dirtier rate=max wss=768MiB 2 vCPUs"},
                             {"runs", runs}, {"dirty_mb_per_s", Median(mbps)}}
                            .dump()
                            .c_str());
  }
  Stop(vm);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_build = argv[1];
  int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  BenchHarvest(runs);
  BenchTax(std::max(1, runs / 2));
  BenchThrottle(std::max(1, runs / 2));
  return 0;
}
