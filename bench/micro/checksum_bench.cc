// Micro-benchmarks of per-byte costs: XXH3 over 64 KiB chunks (snapshot chunks, frames) and
// over 4 KiB pages walked through 64 MiB of RAM (the migration's per-page hash: the working
// set of a checkpoint or round 0 does not sit in cache), little-endian field encoding.
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

static void BM_ChecksumPagesOf64MiB(benchmark::State& state) {
  std::vector<uint8_t> ram(64 << 20);
  for (size_t i = 0; i < ram.size(); ++i) ram[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  size_t at = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ferry::Checksum64(&ram[at], 4096));
    at = (at + 4096) % ram.size();
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_ChecksumPagesOf64MiB);

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
