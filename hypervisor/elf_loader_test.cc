#include "ferry/hypervisor/elf_loader.h"

#include <gtest/gtest.h>

#include <vector>

#include "ferry/base/coding.h"

namespace ferry::hypervisor {
namespace {

// A minimal ELF64 executable with one PT_LOAD segment, built field by field.
std::vector<uint8_t> MakeElf(uint64_t vaddr, uint64_t entry, uint64_t filesz, uint64_t memsz,
                             uint8_t elf_class = 2, uint16_t type = 2) {
  Encoder e;
  const uint8_t ident[16] = {0x7f, 'E', 'L', 'F', elf_class, 1, 1, 0};
  e.PutBytes(ident);
  e.PutU16(type);
  e.PutU16(62);  // x86-64
  e.PutU32(1);
  e.PutU64(entry);
  e.PutU64(64);  // phoff
  e.PutU64(0);   // shoff
  e.PutU32(0);   // flags
  e.PutU16(64);  // ehsize
  e.PutU16(56);  // phentsize
  e.PutU16(1);   // phnum
  e.PutU16(0);
  e.PutU16(0);
  e.PutU16(0);
  e.PutU32(1);  // PT_LOAD
  e.PutU32(5);
  e.PutU64(120);  // offset of the data
  e.PutU64(vaddr);
  e.PutU64(vaddr);
  e.PutU64(filesz);
  e.PutU64(memsz);
  e.PutU64(0x1000);
  for (uint64_t i = 0; i < filesz; ++i) e.PutU8(static_cast<uint8_t>(i + 1));
  return e.Take();
}

class ElfLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { memory_.emplace(std::move(GuestMemory::Create(8 << 20).value())); }
  std::optional<GuestMemory> memory_;
};

TEST_F(ElfLoaderTest, LoadsSegmentAndZeroesBss) {
  memory_->host()[0x400000 + 20] = 0xee;
  auto elf = MakeElf(0x400000, 0x400004, 16, 64);
  auto r = LoadElf(elf, *memory_);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->entry, 0x400004u);
  EXPECT_EQ(r->image_end, 0x400040u);
  EXPECT_EQ(memory_->host()[0x400000], 1);
  EXPECT_EQ(memory_->host()[0x400000 + 15], 16);
  EXPECT_EQ(memory_->host()[0x400000 + 20], 0) << "bss must be zeroed";
}

TEST_F(ElfLoaderTest, RefusesMalformedImages) {
  struct Case {
    const char* name;
    std::vector<uint8_t> elf;
  } cases[] = {
      {"not elf", std::vector<uint8_t>(200, 0x41)},
      {"32-bit", MakeElf(0x400000, 0x400000, 16, 16, 1)},
      {"shared object", MakeElf(0x400000, 0x400000, 16, 16, 2, 3)},
      {"below image base", MakeElf(0x1000, 0x1000, 16, 16)},
      {"beyond memory", MakeElf(0x7ff000, 0x7ff000, 16, 0x2000)},
      {"entry outside", MakeElf(0x400000, 0x500000, 16, 16)},
      {"filesz > memsz", MakeElf(0x400000, 0x400000, 32, 16)},
      {"overflowing memsz", MakeElf(0x400000, 0x400000, 16, ~0ull - 0x100)},
  };
  for (auto& c : cases) {
    auto r = LoadElf(c.elf, *memory_);
    EXPECT_FALSE(r.ok()) << c.name;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << c.name;
    }
  }
}

TEST_F(ElfLoaderTest, RefusesEveryTruncation) {
  auto elf = MakeElf(0x400000, 0x400000, 16, 16);
  for (size_t cut = 0; cut < elf.size(); ++cut) {
    std::vector<uint8_t> part(elf.begin(), elf.begin() + cut);
    EXPECT_FALSE(LoadElf(part, *memory_).ok()) << "cut at " << cut;
  }
}

TEST_F(ElfLoaderTest, MissingFileNamesThePath) {
  auto r = LoadElfFile("/nonexistent/guest.elf", *memory_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/guest.elf"), std::string::npos);
}

}  // namespace
}  // namespace ferry::hypervisor
