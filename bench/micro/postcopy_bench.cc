// Post-copy without a VM: a 256 MiB "guest" of random data (the memfd a VM's RAM is) moves by
// post-copy at once over loopback TCP through the real code (PostcopyDestination,
// RunPostcopySource, PageSink placing through userfaultfd, two data streams plus the
// page-request connection), while a toucher thread standing in for a vCPU reads a random
// page every 500 us. Reports, medians of --runs: the post-copy's duration and rate, the
// faults served on demand with their latency (fault read to page installed, p50/p99), and
// the toucher's own view of each touch (p50/p99/max), with the background at full speed
// and capped (--bandwidth). Every page is checked against the source at the end.
//   build/bench/postcopy_bench [--runs 5] [--mib 256] [--cap-mb 200]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/clock.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/page_sink.h"
#include "ferry/migrate/postcopy_destination.h"
#include "ferry/migrate/postcopy_source.h"
#include "ferry/migrate/rate_limiter.h"
#include "ferry/migrate/stream_set.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {
namespace {

using hypervisor::GuestMemory;
constexpr uint32_t kStreams = 2;

struct Pair {
  std::unique_ptr<Channel> src, dst;
};

Pair Connect(Listener& listener) {
  Pair p;
  auto at = ParseEndpoint(listener.LocalAddress());
  std::thread t([&] {
    auto s = listener.Accept(5000);
    if (s.ok()) p.dst = std::make_unique<Channel>(std::move(*s), "destination");
  });
  auto c = ConnectTcp(*at, 5000);
  if (c.ok()) p.src = std::make_unique<Channel>(std::move(*c), "source");
  t.join();
  if (p.src) p.src->set_timeout_ms(20000);
  if (p.dst) p.dst->set_timeout_ms(20000);
  return p;
}

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

struct RunResult {
  bool ok = false;
  double ms = 0, gb_s = 0;
  uint64_t faults = 0;
  double fault_p50 = 0, fault_p99 = 0, touch_p50 = 0, touch_p99 = 0, touch_max = 0;
  uint64_t wrong = 0;
};

RunResult RunOnce(uint64_t mib, uint64_t cap_bytes_s) {
  RunResult out;
  const uint64_t pages = (mib << 20) / kPageBytes;
  auto s = GuestMemory::Create(mib << 20), d = GuestMemory::Create(mib << 20);
  if (!s.ok() || !d.ok()) return out;
  GuestMemory& src = *s;
  GuestMemory& dst = *d;
  std::mt19937_64 rng(42);
  std::vector<uint64_t> chunk((1 << 20) / 8);
  for (uint64_t off = 0; off < (mib << 20); off += 1 << 20) {
    for (auto& w : chunk) w = rng();
    (void)src.WriteThroughFd(off, chunk.data(), 1 << 20);
  }
  auto listener = ListenTcp(Endpoint{"127.0.0.1", 0});
  if (!listener.ok()) return out;
  RateLimiter limiter(cap_bytes_s);
  std::vector<std::unique_ptr<Channel>> data, data_dst;
  for (uint32_t i = 0; i < kStreams; ++i) {
    Pair p = Connect(**listener);
    p.src->set_limiter(&limiter);
    data.push_back(std::move(p.src));
    data_dst.push_back(std::move(p.dst));
  }
  Pair requests = Connect(**listener), control = Connect(**listener);
  StreamSet streams(src, std::move(data), EncoderOptions{});
  Bitmap outstanding(pages);
  outstanding.SetAll();  // post-copy at once: every page follows the VM
  auto pd = PostcopyDestination::Switch(dst, outstanding, *requests.dst, PostcopyDestinationOptions{});
  if (!pd.ok()) {
    std::fprintf(stderr, "postcopy_bench: %s\n", pd.status().message().c_str());
    return out;
  }
  std::vector<std::thread> receivers;
  for (uint32_t i = 0; i < kStreams; ++i) {
    receivers.emplace_back([&, i] {
      PageSink sink(dst, i, kStreams);
      sink.set_postcopy(&(*pd)->memory());
      Frame f;
      while (data_dst[i]->Receive(&f).ok() && f.type == static_cast<uint16_t>(MsgType::kPages)) {
        if (!sink.Apply(f.payload).ok()) return;
      }
    });
  }
  std::atomic<bool> done{false};
  std::vector<double> touch_us;
  std::atomic<uint64_t> wrong{0};
  std::thread vcpu([&] {
    std::mt19937_64 r(7);
    while (!done) {
      const uint64_t p = r() % pages;
      const uint64_t t0 = MonotonicNs();
      uint8_t copy[kPageBytes];
      std::memcpy(copy, dst.host() + p * kPageBytes, kPageBytes);
      touch_us.push_back((MonotonicNs() - t0) / 1e3);
      wrong += std::memcmp(copy, src.host() + p * kPageBytes, kPageBytes) != 0;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  const uint64_t t0 = MonotonicNs();
  PostcopySourceResult r;
  std::thread source([&] {
    PostcopyPageServer server(*requests.src, src.host(), pages, [&] { control.src->Close(); });
    r = RunPostcopySource(outstanding, {&streams, requests.src.get(), control.src.get(), &server, {}}, 20000);
  });
  auto complete = (*pd)->Finish(*control.dst, nullptr);
  // Protocol version 6: the destination confirms it released the VM (the source waits for it).
  if (complete.ok()) (void)control.dst->Send(MsgType::kPostcopyReleased, EncodeReason(""));
  out.ms = (MonotonicNs() - t0) / 1e6;
  source.join();
  done = true;
  vcpu.join();
  for (auto& t : receivers) t.join();
  for (uint64_t p = 0; p < pages; ++p) wrong += std::memcmp(dst.host() + p * kPageBytes, src.host() + p * kPageBytes, kPageBytes) != 0;
  out.ok = complete.ok() && r.outcome == PostcopyOutcome::kCompleted && wrong == 0;
  out.wrong = wrong;
  out.gb_s = (mib << 20) / (out.ms / 1e3) / 1e9;
  if (complete.ok()) {
    out.faults = complete->faults;
    out.fault_p50 = complete->fault_p50_us;
    out.fault_p99 = complete->fault_p99_us;
  }
  out.touch_p50 = Pct(touch_us, 0.5);
  out.touch_p99 = Pct(touch_us, 0.99);
  out.touch_max = touch_us.empty() ? 0 : *std::max_element(touch_us.begin(), touch_us.end());
  return out;
}

double Median(std::vector<double> v) { return Pct(std::move(v), 0.5); }

}  // namespace
}  // namespace ferry::migrate

int main(int argc, char** argv) {
  using namespace ferry::migrate;
  int runs = 5;
  uint64_t mib = 256, cap_mb = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--runs") runs = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--mib") mib = std::max<uint64_t>(2, std::strtoull(argv[i + 1], nullptr, 10) & ~1ull);
    else if (a == "--cap-mb") cap_mb = std::strtoull(argv[i + 1], nullptr, 10);
  }
  std::printf("post-copy of %llu MiB of random data over loopback TCP, %d runs, medians\n",
              static_cast<unsigned long long>(mib), runs);
  std::printf("%-16s %9s %8s %7s %15s %24s %4s\n", "background", "ms", "GB/s", "faults", "fault p50/p99 us",
              "touch p50/p99/max us", "ok");
  for (uint64_t cap : {uint64_t{0}, cap_mb * 1000000}) {
    std::vector<double> ms, gb, faults, f50, f99, t50, t99, tmax;
    int ok = 0;
    for (int i = 0; i < runs; ++i) {
      RunResult r = RunOnce(mib, cap);
      ok += r.ok;
      ms.push_back(r.ms);
      gb.push_back(r.gb_s);
      faults.push_back(static_cast<double>(r.faults));
      f50.push_back(r.fault_p50);
      f99.push_back(r.fault_p99);
      t50.push_back(r.touch_p50);
      t99.push_back(r.touch_p99);
      tmax.push_back(r.touch_max);
    }
    const std::string label = cap ? "capped " + std::to_string(cap_mb) + " MB/s" : "full speed";
    std::printf("%-16s %9.0f %8.2f %7.0f %7.0f/%-7.0f %8.1f/%.0f/%.0f %4d/%d\n", label.c_str(), Median(ms), Median(gb),
                Median(faults), Median(f50), Median(f99), Median(t50), Median(t99), Median(tmax), ok, runs);
  }
  return 0;
}
