// The page pipeline without a VM, against the wire it runs on. Pages of incompressible random
// data go from one GuestMemory (a memfd, what a VM's RAM is) to another over loopback TCP
// through the real code, as Migrate() and the replication standby run it: StreamSet (hash,
// copy, encode, send on N streams) -> Channel -> PageSink (decode, land), with the default
// 64 MiB XBZRLE cache.
//  - checkpoint: an 8 MiB working set (2048 pages) rewritten before each checkpoint, shipped
//    from a staging copy, staged by the receivers and applied once every stream's epoch end
//    is in (the standby's commit); per checkpoint ms median/p90 and GB/s, and its phases'
//    medians on stderr: sent (the source's last frame written), staged (every stream's epoch
//    end received), applied (in guest memory).
//  - ram: --ram-mib of random data as one pre-copy round 0 into a fresh destination.
//  - tcp: the same bytes as a plain TCP copy (1 MiB send/recv, same socket buffers) over the
//    same loopback in the same run: the wire's limit. Ratios are against it. For ram also
//    tcp+land: the plain copy whose receiver also writes what it got into a fresh memfd, as
//    any destination must land pages in RAM it has not touched yet (`of land`: against it).
// Every run's destination is compared with its source.
//   build/bench/pipeline_bench [--runs 5] [--checkpoints 100] [--ram-mib 1024] [--streams 1,2]
//                              [--compress none,zstd] [--cases checkpoint,ram,tcp] [--no-verify] [--tls]
// --tls: the pipeline's streams are TLS 1.3 (shared key); the tcp row stays plain TCP.
#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/clock.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/checkpoint_protocol.h"
#include "ferry/migrate/page_sink.h"
#include "ferry/migrate/stream_set.h"
#include "ferry/migrate/tls.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {
namespace {

using hypervisor::GuestMemory;
constexpr uint64_t kCheckpointPages = 2048;
constexpr uint64_t kXbzrleCacheBytes = 64ull << 20;  // Migrate()'s and replication's default
bool verify = true;  // --no-verify: leave the comparisons out of a profile

// Thread names split a profile (`perf report --sort comm`): setup, send (StreamSet's streams
// inherit it), recv, tcp.
void Name(const char* name) { pthread_setname_np(pthread_self(), name); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "pipeline_bench: %s\n", what.c_str());
  std::exit(1);
}

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

void FillRandom(uint8_t* p, uint64_t bytes, uint64_t* state) {
  for (uint64_t i = 0; i < bytes; i += 8) {  // splitmix64: incompressible to zstd and XBZRLE
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(p + i, &z, 8);
  }
}

GuestMemory NewMemory(uint64_t bytes) {
  auto m = GuestMemory::Create(bytes);
  if (!m.ok()) Die(m.status().message());
  return std::move(*m);
}

struct Streams {
  std::vector<std::unique_ptr<Channel>> src, dst;
};

// --tls: every stream TLS 1.3 with a shared key, as a keyed migration's (migrate/tls.h).
bool tls = false;

std::unique_ptr<Connection> Secure(std::unique_ptr<Connection> c, TlsConnection::Side side) {
  if (!tls) return c;
  auto t = TlsConnection::Wrap(std::move(c), Security::Keyed(Key{std::vector<uint8_t>(32, 'k')}), side);
  if (!t.ok()) Die(t.status().message());
  Status st = (*t)->Handshake(5000);
  if (!st.ok()) Die(st.message());
  return std::move(*t);
}

Streams Connect(uint32_t n) {
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  if (!l.ok()) Die(l.status().message());
  auto at = ParseEndpoint((*l)->LocalAddress());
  Streams s;
  for (uint32_t i = 0; i < n; ++i) {
    std::unique_ptr<Channel> dst;
    std::thread t([&] {
      auto c = (*l)->Accept(5000);
      if (c.ok()) dst = std::make_unique<Channel>(Secure(std::move(*c), TlsConnection::Side::kServer), "destination");
    });
    auto c = ConnectTcp(*at, 5000);
    std::unique_ptr<Connection> src = c.ok() ? Secure(std::move(*c), TlsConnection::Side::kClient) : nullptr;
    t.join();
    if (!src || !dst) Die("loopback connect failed");
    s.src.push_back(std::make_unique<Channel>(std::move(src), "source"));
    dst->set_timeout_ms(30000);
    s.dst.push_back(std::move(dst));
  }
  return s;
}

EncoderOptions Options(bool zstd, uint32_t streams) {
  EncoderOptions o;
  o.compress = zstd;
  o.xbzrle_cache_pages = kXbzrleCacheBytes / kPageBytes;
  (void)streams;
  return o;
}

// Each checkpoint's ms from its start: its last frame sent, its pages all staged, applied.
struct CheckpointTimes {
  std::vector<double> sent, staged, applied;
};

// Checkpoints: a receiver thread per stream stages each epoch's pages and waits for the
// commit, as the standby does. Returns each checkpoint's times (after 3 unmeasured ones).
CheckpointTimes RunCheckpoints(uint32_t n, bool zstd, int count, EncoderCounts* counts) {
  GuestMemory guest = NewMemory(64ull << 20), staging = NewMemory(64ull << 20), replica = NewMemory(64ull << 20);
  Streams s = Connect(n);
  StreamSet set(staging, std::move(s.src), Options(zstd, n));
  Bitmap pages(staging.size() / kPageBytes);
  pages.SetRange(0, kCheckpointPages);
  std::vector<StagedPages> staged(n);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> arrived(n, 0);
  uint64_t released = 0;
  std::vector<std::thread> receivers;
  for (uint32_t i = 0; i < n; ++i) {
    receivers.emplace_back([&, i] {
      Name("recv");
      PageSink sink(replica, i, n);
      sink.set_staging(&staged[i]);
      Frame f;
      uint64_t got = 0;
      for (uint64_t epoch = 1;; ++epoch) {
        for (;;) {
          Status st = s.dst[i]->Receive(&f);
          if (!st.ok()) Die(st.message());
          if (f.type == static_cast<uint16_t>(MsgType::kStreamEnd)) return;
          if (f.type == static_cast<uint16_t>(MsgType::kPages)) {
            auto a = sink.Apply(f.payload);
            if (!a.ok()) Die(a.status().message());
            got += *a;
            continue;
          }
          auto e = DecodeEpochEnd(f.payload);
          if (!e.ok() || e->epoch != epoch || e->pages != got) Die("epoch end mismatch");
          got = 0;
          break;
        }
        std::unique_lock lock(mu);
        arrived[i] = epoch;
        cv.notify_all();
        cv.wait(lock, [&] { return released >= epoch; });
      }
    });
  }
  uint64_t seed = 42;
  CheckpointTimes times;
  for (int c = 1; c <= count + 3; ++c) {
    Name("setup");
    FillRandom(guest.host(), kCheckpointPages * kPageBytes, &seed);
    std::memcpy(staging.host(), guest.host(), kCheckpointPages * kPageBytes);  // the pause's copy
    Name("send");
    const uint64_t t0 = MonotonicNs();
    Status st = set.SendRound(pages, staging.host());
    if (!st.ok()) Die(st.message());
    if (!set.EndEpoch(c).ok()) Die("epoch end");
    const uint64_t t_sent = MonotonicNs();
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return std::all_of(arrived.begin(), arrived.end(), [&](uint64_t a) { return a >= uint64_t(c); }); });
    }
    const uint64_t t_staged = MonotonicNs();
    for (auto& x : staged) {
      if (!ApplyStaged(replica, x).ok()) Die("apply");
      x.Clear();
    }
    const uint64_t t1 = MonotonicNs();
    {
      std::lock_guard lock(mu);
      released = c;
    }
    cv.notify_all();
    if (c > 3) {
      times.sent.push_back((t_sent - t0) / 1e6);
      times.staged.push_back((t_staged - t0) / 1e6);
      times.applied.push_back((t1 - t0) / 1e6);
    }
    if (verify && std::memcmp(replica.host(), staging.host(), kCheckpointPages * kPageBytes) != 0) {
      Die("replica differs");
    }
  }
  if (!set.Finish().ok()) Die("finish");
  for (auto& t : receivers) t.join();
  *counts = set.counts();
  return times;
}

// Round 0 of a migration into a fresh destination; returns its ms.
double RunRam(const GuestMemory& src, uint32_t n, bool zstd, EncoderCounts* counts) {
  Name("setup");
  GuestMemory dst = NewMemory(src.size());
  Streams s = Connect(n);
  StreamSet set(src, std::move(s.src), Options(zstd, n));
  Bitmap pages(src.size() / kPageBytes);
  pages.SetAll();
  std::vector<std::thread> receivers;
  const uint64_t t0 = MonotonicNs();
  for (uint32_t i = 0; i < n; ++i) {
    receivers.emplace_back([&, i] {
      Name("recv");
      PageSink sink(dst, i, n);
      Frame f;
      for (;;) {
        Status st = s.dst[i]->Receive(&f);
        if (!st.ok()) Die(st.message());
        if (f.type == static_cast<uint16_t>(MsgType::kStreamEnd)) return;
        auto a = sink.Apply(f.payload);
        if (!a.ok()) Die(a.status().message());
      }
    });
  }
  Name("send");
  if (!set.SendRound(pages).ok() || !set.Finish().ok()) Die("send");
  for (auto& t : receivers) t.join();
  const double ms = (MonotonicNs() - t0) / 1e6;
  Name("setup");
  if (verify && std::memcmp(dst.host(), src.host(), src.size()) != 0) Die("destination differs");
  *counts = set.counts();
  return ms;
}

// A plain TCP copy of `bytes` from `data` on n connections (1 MiB writes, 4 MiB socket
// buffers, no delay: what TcpConnection sets); `times` copies on the same connections.
// `land`: the receivers also pwrite what they got at its offset there.
std::vector<double> RunTcp(const uint8_t* data, uint64_t bytes, uint32_t n, int times, GuestMemory* land = nullptr) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) || ::listen(lfd, 16) ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len)) {
    Die("plain tcp listen");
  }
  std::vector<int> snd(n), rcv(n);
  for (uint32_t i = 0; i < n; ++i) {
    snd[i] = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(snd[i], reinterpret_cast<sockaddr*>(&a), sizeof(a))) Die("plain tcp connect");
    rcv[i] = ::accept(lfd, nullptr, nullptr);
    for (int fd : {snd[i], rcv[i]}) {
      int one = 1, buf = 4 << 20;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    }
  }
  ::close(lfd);
  std::vector<double> ms;
  const uint64_t share = bytes / n;
  for (int r = 0; r < times; ++r) {
    std::vector<std::thread> threads;
    const uint64_t t0 = MonotonicNs();
    for (uint32_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        Name("tcp");
        std::vector<uint8_t> buf(1 << 20);
        for (uint64_t got = 0; got < share;) {
          ssize_t k = ::recv(rcv[i], buf.data(), std::min<uint64_t>(buf.size(), share - got), 0);
          if (k <= 0) Die("plain tcp recv");
          if (land && ::pwrite(land->fd(), buf.data(), k, i * share + got) != k) Die("plain tcp land");
          got += k;
        }
      });
      threads.emplace_back([&, i] {
        Name("tcp");
        const uint8_t* p = data + i * share;
        for (uint64_t sent = 0; sent < share;) {
          ssize_t k = ::send(snd[i], p + sent, std::min<uint64_t>(1 << 20, share - sent), 0);
          if (k <= 0) Die("plain tcp send");
          sent += k;
        }
      });
    }
    for (auto& t : threads) t.join();
    ms.push_back((MonotonicNs() - t0) / 1e6);
  }
  for (uint32_t i = 0; i < n; ++i) {
    ::close(snd[i]);
    ::close(rcv[i]);
  }
  return ms;
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) out.push_back(x);
  return out;
}

std::string CountsText(const EncoderCounts& c) {
  char b[160];
  std::snprintf(b, sizeof(b), "raw %llu zstd %llu/%llu xbzrle %llu/%llu cached %llu", (unsigned long long)c.raw,
                (unsigned long long)c.zstd, (unsigned long long)c.zstd_tries, (unsigned long long)c.xbzrle,
                (unsigned long long)c.xbzrle_tries, (unsigned long long)c.cached);
  return b;
}

}  // namespace
}  // namespace ferry::migrate

int main(int argc, char** argv) {
  using namespace ferry::migrate;
  int runs = 5, checkpoints = 100;
  uint64_t ram_mib = 1024;
  std::string streams_arg = "1,2", compress_arg = "none,zstd", cases = "checkpoint,ram,tcp";
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--no-verify" || a == "--tls") {
      if (a == "--tls") tls = true;
      else verify = false;
      --i;
      continue;
    }
    if (i + 1 == argc) Die(a + " needs a value");
    if (a == "--runs") runs = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--checkpoints") checkpoints = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--ram-mib") ram_mib = std::max<uint64_t>(16, std::strtoull(argv[i + 1], nullptr, 10));
    else if (a == "--streams") streams_arg = argv[i + 1];
    else if (a == "--compress") compress_arg = argv[i + 1];
    else if (a == "--cases") cases = argv[i + 1];
    else Die("unknown flag " + a);
  }
  const bool run_ckpt = cases.find("checkpoint") != std::string::npos, run_ram = cases.find("ram") != std::string::npos,
             run_tcp = cases.find("tcp") != std::string::npos;
  Name("setup");
  GuestMemory src = NewMemory(ram_mib << 20);
  uint64_t seed = 7;
  FillRandom(src.host(), src.size(), &seed);
  const double ckpt_bytes = kCheckpointPages * kPageBytes;
  std::printf("pipeline over loopback TCP%s: %d checkpoints of 8 MiB, %d x %llu MiB round 0; medians\n", tls ? " (streams TLS 1.3)" : "", checkpoints,
              runs, (unsigned long long)ram_mib);
  std::printf("%-10s %3s %-5s %9s %9s %7s %9s  %s\n", "case", "N", "codec", "ms p50", "ms p90", "GB/s", "of tcp",
              "encoder (pages, tries)");
  for (const std::string& ns : Split(streams_arg)) {
    const uint32_t n = std::max(1, std::atoi(ns.c_str()));
    std::vector<double> tcp_ckpt{1e9}, tcp_ram{1e9}, tcp_land{1e9};  // without tcp: no ratio ("-")
    auto of_tcp = [&](double gbs, double tcp_gbs) {
      char b[32];
      if (run_tcp) std::snprintf(b, sizeof b, "%.2f", gbs / tcp_gbs);
      return run_tcp ? std::string(b) : std::string("-");
    };
    if (run_tcp && run_ckpt) tcp_ckpt = RunTcp(src.host(), kCheckpointPages * kPageBytes, n, checkpoints);
    if (run_tcp && run_ram) {
      tcp_ram.clear();
      tcp_land.clear();
      for (int r = 0; r < runs; ++r) {
        tcp_ram.push_back(RunTcp(src.host(), src.size(), n, 1)[0]);
        GuestMemory fresh = NewMemory(src.size());
        tcp_land.push_back(RunTcp(src.host(), src.size(), n, 1, &fresh)[0]);
      }
    }
    const double tcp_land_gbs = src.size() / Pct(tcp_land, 0.5) / 1e6;
    const double tcp_ckpt_gbs = ckpt_bytes / Pct(tcp_ckpt, 0.5) / 1e6, tcp_ram_gbs = src.size() / Pct(tcp_ram, 0.5) / 1e6;
    if (run_tcp && run_ckpt) std::printf("%-10s %3u %-5s %9.2f %9.2f %7.2f %9s\n", "checkpoint", n, "tcp", Pct(tcp_ckpt, 0.5), Pct(tcp_ckpt, 0.9),
                tcp_ckpt_gbs, "1.00");
    for (const std::string& codec : Split(compress_arg)) {
      if (!run_ckpt) break;
      EncoderCounts counts;
      const CheckpointTimes times = RunCheckpoints(n, codec == "zstd", checkpoints, &counts);
      const std::vector<double>& ms = times.applied;
      std::fprintf(stderr, "checkpoint N=%u %s phases (ms from its start, medians): sent %.2f, staged %.2f, applied %.2f\n",
                   n, codec.c_str(), Pct(times.sent, 0.5), Pct(times.staged, 0.5), Pct(ms, 0.5));
      const double gbs = ckpt_bytes / Pct(ms, 0.5) / 1e6;
      std::printf("%-10s %3u %-5s %9.2f %9.2f %7.2f %9s  %s\n", "checkpoint", n, codec.c_str(), Pct(ms, 0.5),
                  Pct(ms, 0.9), gbs, of_tcp(gbs, tcp_ckpt_gbs).c_str(), CountsText(counts).c_str());
    }
    if (run_tcp && run_ram) {
      std::printf("%-10s %3u %-5s %9.1f %9.1f %7.2f %9s\n", "ram", n, "tcp", Pct(tcp_ram, 0.5), Pct(tcp_ram, 0.9),
                  tcp_ram_gbs, "1.00");
      std::printf("%-10s %3u %-5s %9.1f %9.1f %7.2f %9s  (of land 1.00)\n", "ram", n, "tcp+land", Pct(tcp_land, 0.5),
                  Pct(tcp_land, 0.9), tcp_land_gbs, of_tcp(tcp_land_gbs, tcp_ram_gbs).c_str());
    }
    for (const std::string& codec : Split(compress_arg)) {
      if (!run_ram) break;
      EncoderCounts counts;
      std::vector<double> ms;
      for (int r = 0; r < runs; ++r) ms.push_back(RunRam(src, n, codec == "zstd", &counts));
      const double gbs = src.size() / Pct(ms, 0.5) / 1e6;
      std::printf("%-10s %3u %-5s %9.1f %9.1f %7.2f %9s  (of land %s) %s\n", "ram", n, codec.c_str(), Pct(ms, 0.5),
                  Pct(ms, 0.9), gbs, of_tcp(gbs, tcp_ram_gbs).c_str(), of_tcp(gbs, tcp_land_gbs).c_str(),
                  CountsText(counts).c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}
