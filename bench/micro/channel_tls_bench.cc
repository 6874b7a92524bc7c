// Protocol streams' throughput over loopback TCP, plaintext against TLS 1.3 (the keyed
// connections' layer, migrate/tls.h), in 1 MiB gather writes as the page streams send them,
// one stream and two in parallel (each encrypting on its own thread, as a migration's do).
// The same run measures both, so the ratio is what TLS costs on this machine:
//   build/bench/channel_tls_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <thread>

#include "ferry/migrate/tls.h"
#include "ferry/migrate/transport.h"

namespace {

using namespace ferry::migrate;

struct Ends {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client, server;
};

Ends Connect(bool tls) {
  Ends e;
  auto l = ListenTcp(Endpoint{"127.0.0.1", 0});
  e.listener = std::move(*l);
  auto at = ParseEndpoint(e.listener->LocalAddress());
  std::thread t([&] {
    auto s = e.listener->Accept(5000);
    e.server = std::move(*s);
  });
  auto c = ConnectTcp(*at, 5000);
  e.client = std::move(*c);
  t.join();
  if (tls) {
    Security key = Security::Keyed(Key{std::vector<uint8_t>(32, 'k')});
    auto c_tls = TlsConnection::Wrap(std::move(e.client), key, TlsConnection::Side::kClient);
    auto s_tls = TlsConnection::Wrap(std::move(e.server), key, TlsConnection::Side::kServer);
    std::thread h([&] { (void)(*s_tls)->Handshake(5000); });
    (void)(*c_tls)->Handshake(5000);
    h.join();
    e.client = std::move(*c_tls);
    e.server = std::move(*s_tls);
  }
  return e;
}

// N streams (state.range(0)), each with its own writer and reader thread as the page streams
// have: every iteration moves 16 MiB per stream in 1 MiB gather writes.
void Streams(benchmark::State& state, bool tls) {
  const int n = static_cast<int>(state.range(0));
  constexpr size_t kBatch = 1 << 20;
  constexpr int kPerIteration = 16;
  std::vector<Ends> ends;
  for (int i = 0; i < n; ++i) ends.push_back(Connect(tls));
  std::vector<uint8_t> header(24, 1), payload(kBatch, 0x5a);
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (auto& e : ends) {
      threads.emplace_back([&e, &header] {
        std::vector<uint8_t> sink(header.size() + kBatch);
        for (int i = 0; i < kPerIteration; ++i) (void)e.server->Read(sink, 10000);
      });
      threads.emplace_back([&e, &header, &payload] {
        for (int i = 0; i < kPerIteration; ++i) (void)e.client->Write(header, payload, 10000);
      });
    }
    for (auto& t : threads) t.join();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n * kPerIteration * static_cast<int64_t>(header.size() + kBatch));
}

void BM_Plaintext(benchmark::State& state) { Streams(state, false); }
void BM_Tls13(benchmark::State& state) { Streams(state, true); }
BENCHMARK(BM_Plaintext)->Arg(1)->Arg(2)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Tls13)->Arg(1)->Arg(2)->UseRealTime()->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
