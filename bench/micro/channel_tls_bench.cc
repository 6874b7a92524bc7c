// One protocol stream's throughput over loopback TCP, plaintext against TLS 1.3 (the keyed
// connections' layer, migrate/tls.h), in 1 MiB gather writes as the page streams send them.
// The same run measures both, so the ratio is what TLS costs one stream on this machine:
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

void Stream(benchmark::State& state, bool tls) {
  Ends e = Connect(tls);
  const size_t batch = 1 << 20;
  std::vector<uint8_t> header(24, 1), payload(batch, 0x5a), sink(header.size() + batch);
  for (auto _ : state) {
    std::thread reader([&] { (void)e.server->Read(sink, 10000); });
    (void)e.client->Write(header, payload, 10000);
    reader.join();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(header.size() + batch));
}

void BM_Plaintext(benchmark::State& state) { Stream(state, false); }
void BM_Tls13(benchmark::State& state) { Stream(state, true); }
BENCHMARK(BM_Plaintext)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Tls13)->UseRealTime()->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
