// The snapshot format, written and read back without KVM: round trip, and refusal of every
// truncation, bit flips across the file, and a wrong version.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "ferry/base/checksum.h"
#include "ferry/hypervisor/snapshot.h"
#include "snapshot_format.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMem = 4 << 20;

class SnapshotFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "ferry-snap-" + std::to_string(getpid());
    memory_.emplace(std::move(GuestMemory::Create(kMem).value()));
    std::mt19937_64 rng(7);
    // Some data chunks, some zero chunks.
    for (uint64_t off = 0; off < kMem; off += 3 * snapshot::kChunkBytes) {
      for (uint64_t i = 0; i < 512; ++i) memory_->host()[off + i * 8] = static_cast<uint8_t>(rng());
    }
    state_.config.mem_bytes = kMem;
    state_.config.vcpus = 2;
    state_.config.guest_path = "guest.elf";
    state_.config.guest_args = "a=1 b=2";
    state_.config.devices = DeviceConfig{"/srv/disk.img", "ftap", "gbr", {0x02, 0xfe, 1, 2, 3, 4}};
    state_.block = BlockState{true, 8192, QueueState{0x400040, 64, 1000, false}};
    state_.net = NetState{true, {0x02, 0xfe, 1, 2, 3, 4}, 0x7f1f0064, QueueState{0x401000, 64, 7, false},
                          QueueState{0x402000, 32, 9, true}};
    for (uint32_t i = 0; i < 2; ++i) {
      VcpuState v;
      v.index = i;
      v.regs.rip = 0x400000 + i;
      v.msrs = {{0x174, i}};
      state_.vcpus.push_back(v);
    }
    state_.console = ConsoleState{10, 2, "partial"};
    state_.clock = ClockState{123456789, 987654321};
    auto st = WriteSnapshot(path_, state_, *memory_, SnapshotOptions{false});
    ASSERT_TRUE(st.ok()) << st.status().message();
    std::ifstream in(path_, std::ios::binary);
    image_.assign(std::istreambuf_iterator<char>(in), {});
  }
  void TearDown() override { ::unlink(path_.c_str()); }

  Status ParseImage(const std::vector<uint8_t>& image) {
    VmState state;
    std::vector<uint8_t> ram;
    snapshot::RamSink sink{[&](uint64_t n) {
                             ram.assign(n, 0);
                             return Status::Ok();
                           },
                           [&](uint64_t off, std::span<const uint8_t> b) {
                             std::copy(b.begin(), b.end(), ram.begin() + off);
                             return Status::Ok();
                           }};
    snapshot::ParseStats stats;
    return snapshot::Parse(image, &state, sink, &stats);
  }

  std::string path_;
  std::optional<GuestMemory> memory_;
  VmState state_;
  std::vector<uint8_t> image_;
};

TEST_F(SnapshotFormatTest, RoundTripsStateAndMemory) {
  if (const char* seeds = std::getenv("FERRY_FUZZ_SEED_DIR")) {  // scripts/fuzz: keep a valid seed
    std::ofstream(std::string(seeds) + "/valid.snap", std::ios::binary)
        .write(reinterpret_cast<const char*>(image_.data()), static_cast<std::streamsize>(image_.size()));
  }
  auto loaded = ReadSnapshot(path_);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ(loaded->state.config.mem_bytes, kMem);
  EXPECT_EQ(loaded->state.config.guest_args, "a=1 b=2");
  ASSERT_EQ(loaded->state.vcpus.size(), 2u);
  EXPECT_EQ(loaded->state.vcpus[1].regs.rip, 0x400001u);
  EXPECT_EQ(loaded->state.console.partial_line, "partial");
  EXPECT_EQ(loaded->state.clock.guest_ns, 123456789u);
  const auto& d = loaded->state.config.devices;
  EXPECT_EQ(d.disk_path, "/srv/disk.img");
  EXPECT_EQ(d.tap, "ftap");
  EXPECT_EQ(d.bridge, "gbr");
  EXPECT_EQ(d.mac[5], 4);
  EXPECT_TRUE(loaded->state.block.present);
  EXPECT_EQ(loaded->state.block.sectors, 8192u);
  EXPECT_EQ(loaded->state.block.queue.next, 1000u);
  EXPECT_EQ(loaded->state.net.guest_ip, 0x7f1f0064u);
  EXPECT_EQ(loaded->state.net.rx.ring_gpa, 0x401000u);
  EXPECT_TRUE(loaded->state.net.tx.broken);
  EXPECT_EQ(std::memcmp(loaded->memory.host(), memory_->host(), kMem), 0);
  EXPECT_GT(loaded->stats.zero_chunks, 0u) << "zero chunks are skipped in the file";
}

TEST_F(SnapshotFormatTest, NoTemporaryFileIsLeftBehind) {
  EXPECT_NE(::access((path_ + ".tmp-" + std::to_string(getpid())).c_str(), F_OK), 0);
}

TEST_F(SnapshotFormatTest, EveryTruncationIsRefused) {
  // Every cut inside the metadata, and a spread of cuts through RAM.
  for (size_t cut = 0; cut < image_.size(); cut += (cut < 4096 ? 1 : 4093)) {
    std::vector<uint8_t> part(image_.begin(), image_.begin() + cut);
    Status st = ParseImage(part);
    EXPECT_FALSE(st.ok()) << "cut at " << cut;
    EXPECT_EQ(st.code(), ErrorCode::kCorrupt) << "cut at " << cut << ": " << st.message();
  }
}

TEST_F(SnapshotFormatTest, BitFlipsAnywhereAreRefused) {
  std::mt19937_64 rng(1);
  std::vector<size_t> offsets;
  for (size_t i = 0; i < 2048 && i < image_.size(); ++i) offsets.push_back(i);  // all metadata
  for (int i = 0; i < 200; ++i) offsets.push_back(rng() % image_.size());     // and RAM
  for (size_t off : offsets) {
    std::vector<uint8_t> bad = image_;
    bad[off] ^= static_cast<uint8_t>(1u << (rng() % 8));
    EXPECT_FALSE(ParseImage(bad).ok()) << "flip at " << off;
  }
}

TEST_F(SnapshotFormatTest, WrongVersionIsRefusedWithItsNumber) {
  std::vector<uint8_t> bad = image_;
  bad[8] = 9;  // version field, then re-seal the header checksum so only the version is wrong
  uint64_t sum = Checksum64(bad.data(), snapshot::kFileHeaderSize - 8);
  for (int i = 0; i < 8; ++i) bad[snapshot::kFileHeaderSize - 8 + i] = static_cast<uint8_t>(sum >> (8 * i));
  Status st = ParseImage(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("version 9"), std::string::npos) << st.message();
}

TEST_F(SnapshotFormatTest, TrailingGarbageIsRefused) {
  std::vector<uint8_t> bad = image_;
  bad.push_back(0);
  EXPECT_FALSE(ParseImage(bad).ok());
}

TEST_F(SnapshotFormatTest, MissingFileIsAClearError) {
  auto r = ReadSnapshot(path_ + ".missing");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("No such file"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace ferry::hypervisor
