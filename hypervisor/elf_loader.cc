#include "ferry/hypervisor/elf_loader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ferry/base/coding.h"
#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {
namespace {

constexpr uint32_t kPtLoad = 1;
constexpr uint16_t kEtExec = 2;
constexpr uint16_t kEmX86_64 = 62;
constexpr size_t kMaxImageFile = 256u << 20;

struct ProgramHeader {
  uint32_t type, flags;
  uint64_t offset, vaddr, paddr, filesz, memsz, align;
};

bool DecodePhdr(std::span<const uint8_t> bytes, ProgramHeader* ph) {
  Decoder d(bytes);
  d.GetU32(&ph->type);
  d.GetU32(&ph->flags);
  d.GetU64(&ph->offset);
  d.GetU64(&ph->vaddr);
  d.GetU64(&ph->paddr);
  d.GetU64(&ph->filesz);
  d.GetU64(&ph->memsz);
  d.GetU64(&ph->align);
  return d.ok();
}

}  // namespace

Result<LoadedImage> LoadElf(std::span<const uint8_t> elf, GuestMemory& memory) {
  static const uint8_t kMagic[4] = {0x7f, 'E', 'L', 'F'};
  if (elf.size() < 64 || std::memcmp(elf.data(), kMagic, 4) != 0) {
    return InvalidArgument("not an ELF file");
  }
  if (elf[4] != 2) return InvalidArgument("not a 64-bit ELF (guests must be ELF64)");
  if (elf[5] != 1) return InvalidArgument("not a little-endian ELF");
  Decoder d(elf.subspan(16));
  uint16_t type, machine, phentsize, phnum;
  uint32_t version;
  uint64_t entry, phoff;
  d.GetU16(&type);
  d.GetU16(&machine);
  d.GetU32(&version);
  d.GetU64(&entry);
  d.GetU64(&phoff);
  std::span<const uint8_t> skip;
  d.GetBytes(8 + 4 + 2, &skip);  // e_shoff, e_flags, e_ehsize
  d.GetU16(&phentsize);
  d.GetU16(&phnum);
  if (!d.ok()) return InvalidArgument("truncated ELF header");
  if (machine != kEmX86_64) return InvalidArgument("ELF is not for x86-64");
  if (type != kEtExec) return InvalidArgument("ELF is not a static executable (ET_EXEC); link with -static -no-pie");
  if (phentsize != 56) return InvalidArgument("unexpected ELF program header size");
  if (phnum == 0 || phnum > 64) return InvalidArgument("ELF has no or too many program headers");
  if (phoff > elf.size() || uint64_t{phnum} * 56 > elf.size() - phoff) {
    return InvalidArgument("ELF program headers lie outside the file");
  }

  LoadedImage image;
  bool entry_covered = false;
  int loads = 0;
  for (uint16_t i = 0; i < phnum; ++i) {
    ProgramHeader ph;
    if (!DecodePhdr(elf.subspan(phoff + uint64_t{i} * 56, 56), &ph)) return InvalidArgument("bad program header");
    if (ph.type != kPtLoad || ph.memsz == 0) continue;
    ++loads;
    if (ph.filesz > ph.memsz) return InvalidArgument("ELF segment has filesz > memsz");
    if (ph.offset > elf.size() || ph.filesz > elf.size() - ph.offset) {
      return InvalidArgument("ELF segment data lies outside the file");
    }
    if (ph.vaddr < FERRY_GPA_IMAGE_MIN) {
      return InvalidArgument("ELF segment below the guest image base 0x400000 (link the guest at 0x400000)");
    }
    if (!memory.Contains(ph.vaddr, ph.memsz)) {
      return InvalidArgument("ELF segment does not fit in guest memory (use a larger --mem)");
    }
    FERRY_RETURN_IF_ERROR(memory.Write(ph.vaddr, elf.data() + ph.offset, ph.filesz));
    std::memset(memory.host() + ph.vaddr + ph.filesz, 0, ph.memsz - ph.filesz);
    image.image_end = std::max(image.image_end, ph.vaddr + ph.memsz);
    if (entry >= ph.vaddr && entry < ph.vaddr + ph.memsz) entry_covered = true;
  }
  if (loads == 0) return InvalidArgument("ELF has no loadable segments");
  if (!entry_covered) return InvalidArgument("ELF entry point lies outside its loaded segments");
  image.entry = entry;
  return image;
}

Result<LoadedImage> LoadElfFile(const std::string& path, GuestMemory& memory) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("guest image " + path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("guest image " + path + " is not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxImageFile) return InvalidArgument("guest image " + path + " is too large");
  std::vector<uint8_t> bytes(st.st_size);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) return ErrnoError("read " + path);
    if (n == 0) break;
    done += n;
  }
  bytes.resize(done);
  auto loaded = LoadElf(bytes, memory);
  if (!loaded.ok()) return loaded.status().Annotate("guest image " + path);
  return loaded;
}

}  // namespace ferry::hypervisor
