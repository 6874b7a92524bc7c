// Micro-benchmarks of the per-byte costs on the snapshot path: XXH3 over 64 KiB chunks and
// little-endian field encoding.
#include <benchmark/benchmark.h>

#include <vector>

#include "ferry/base/checksum.h"
#include "ferry/base/coding.h"

static void BM_Checksum64KiB(benchmark::State& state) {
  std::vector<uint8_t> buf(64 * 1024, 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(ferry::Checksum64(buf.data(), buf.size()));
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_Checksum64KiB);

static void BM_EncodeU64(benchmark::State& state) {
  for (auto _ : state) {
    ferry::Encoder e;
    for (uint64_t i = 0; i < 1024; ++i) e.PutU64(i);
    benchmark::DoNotOptimize(e.bytes().data());
  }
  state.SetItemsProcessed(state.iterations() * 1024);
}
BENCHMARK(BM_EncodeU64);

BENCHMARK_MAIN();
