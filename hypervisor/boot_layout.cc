#include "boot_layout.h"

#include <cstring>

#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t k2M = 2ull << 20;
constexpr uint64_t k1G = 1ull << 30;
constexpr uint64_t kPresent = 1, kWritable = 2, kUser = 4, kAccessed = 0x20, kDirty = 0x40, kHuge = 0x80;
// Accessed/dirty preset so the CPU never writes our page tables.
constexpr uint64_t kTable = kPresent | kWritable | kUser | kAccessed;

constexpr uint64_t kPml4 = FERRY_GPA_PAGE_TABLES;
constexpr uint64_t kPdpt = kPml4 + 0x1000;
constexpr uint64_t kLowPt = kPdpt + 0x1000;  // 4 KiB pages of the first 2 MiB
constexpr uint64_t kFirstPd = kLowPt + 0x1000;
constexpr uint64_t kMaxGiB = 64;
constexpr uint64_t kTss = FERRY_GPA_TSS;
// 104-byte TSS, then a 65536-port I/O bitmap (all zero: every port allowed) and its 0xff end
// byte. IOPL=3 alone should permit port I/O at CPL3; the bitmap also covers KVMs that check it.
constexpr uint64_t kTssLimit = 0x68 + 8192;

// GDT slots, Linux-compatible selectors: user data 0x2b, user code64 0x33, TSS 0x40.
constexpr uint64_t kGdt[] = {
    0,                   // null
    0x00af9b000000ffff,  // 0x08 kernel code64 (unused: guests never run at CPL0)
    0x00cf93000000ffff,  // 0x10 kernel data
    0x00cffb000000ffff,  // 0x18 user code32
    0x00cffb000000ffff,  // 0x20 user code32 (Linux __USER32_CS slot)
    0x00cff3000000ffff,  // 0x28 user data
    0x00affb000000ffff,  // 0x30 user code64
    0,                   // 0x38 unused
};
constexpr uint16_t kTssSelector = 0x40;
constexpr uint16_t kGdtLimit = (8 + 2) * 8 - 1;

void Put64(GuestMemory& m, uint64_t gpa, uint64_t v) {
  uint8_t* p = m.host() + gpa;
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t StackBytesTotal(uint32_t vcpus) { return (uint64_t{vcpus} * FERRY_STACK_BYTES + k2M - 1) & ~(k2M - 1); }

void WritePageTables(GuestMemory& m) {
  uint64_t gib = (m.size() + k1G - 1) / k1G;
  std::memset(m.host() + kPml4, 0, (3 + gib) * 0x1000);
  Put64(m, kPml4, kPdpt | kTable);
  for (uint64_t g = 0; g < gib; ++g) {
    uint64_t pd = kFirstPd + g * 0x1000;
    Put64(m, kPdpt + g * 8, pd | kTable);
    for (uint64_t e = 0; e < 512; ++e) {
      uint64_t addr = g * k1G + e * k2M;
      if (addr >= m.size()) break;
      uint64_t entry = (g == 0 && e == 0) ? (kLowPt | kTable)
                                          : (addr | kTable | kDirty | kHuge);
      Put64(m, pd + e * 8, entry);
    }
  }
  // First 2 MiB: page 0 absent; the VMM's structures supervisor-only; the boot info and
  // shared page user read-only; hypercall blocks user read-write; everything else absent.
  uint64_t tables_end = kFirstPd + gib * 0x1000;
  for (uint64_t addr = 0x1000; addr < k2M; addr += 0x1000) {
    uint64_t flags = 0;
    if (addr == FERRY_GPA_GDT || (addr >= kTss && addr < kPml4) || (addr >= kPml4 && addr < tables_end)) {
      flags = kPresent | kWritable | kAccessed | kDirty;
    } else if (addr == FERRY_GPA_BOOT_INFO || addr == FERRY_GPA_SHARED) {
      flags = kPresent | kUser | kAccessed;
    } else if (addr == FERRY_GPA_HCALL) {
      flags = kPresent | kWritable | kUser | kAccessed | kDirty;
    }
    if (flags) Put64(m, kLowPt + (addr >> 12) * 8, addr | flags);
  }
}

void WriteGdtAndTss(GuestMemory& m) {
  std::memset(m.host() + FERRY_GPA_GDT, 0, 0x1000);
  for (size_t i = 0; i < sizeof kGdt / sizeof kGdt[0]; ++i) Put64(m, FERRY_GPA_GDT + i * 8, kGdt[i]);
  // 64-bit available TSS descriptor (16 bytes), limit 0x67, no I/O bitmap (IOPL=3 suffices).
  std::memset(m.host() + kTss, 0, kTssLimit + 1);
  uint64_t base = kTss, limit = kTssLimit;
  uint64_t low = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
                 (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  Put64(m, FERRY_GPA_GDT + kTssSelector, low);
  Put64(m, FERRY_GPA_GDT + kTssSelector + 8, base >> 32);
  m.host()[kTss + 0x66] = 0x68;  // I/O bitmap right after the TSS
  m.host()[kTss + kTssLimit] = 0xff;
}

kvm_segment Segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = dpl;
  s.db = code64 ? 0 : 1;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

}  // namespace

uint64_t MinimumMemory(uint32_t vcpus) { return FERRY_GPA_IMAGE_MIN + 2 * k2M + StackBytesTotal(vcpus); }

Status WriteBootStructures(const BootParams& p, GuestMemory& m) {
  if (m.size() / k1G > kMaxGiB) return InvalidArgument("guest memory above 64 GiB is not supported");
  if (p.vcpus == 0 || p.vcpus > FERRY_MAX_VCPUS) {
    return InvalidArgument("vCPU count must be 1.." + std::to_string(FERRY_MAX_VCPUS));
  }
  if (p.args.size() >= FERRY_MAX_ARGS) return InvalidArgument("guest arguments exceed 1023 bytes");
  uint64_t free_start = (p.image_end + k2M - 1) & ~(k2M - 1);
  uint64_t stacks = StackBytesTotal(p.vcpus);
  if (m.size() < stacks || free_start + k2M > m.size() - stacks) {
    return InvalidArgument("guest memory too small for the image and " + std::to_string(p.vcpus) + " vCPU stacks");
  }
  WriteGdtAndTss(m);
  WritePageTables(m);
  ferry_boot_info info{};
  info.magic = FERRY_BOOT_MAGIC;
  info.version = FERRY_BOOT_VERSION;
  info.vcpus = p.vcpus;
  info.mem_bytes = m.size();
  info.free_start = free_start;
  info.free_end = m.size() - stacks;
  std::memcpy(info.args, p.args.data(), p.args.size());
  FERRY_RETURN_IF_ERROR(m.Write(FERRY_GPA_BOOT_INFO, &info, sizeof info));
  std::memset(m.host() + FERRY_GPA_SHARED, 0, 0x1000);
  std::memset(m.host() + FERRY_GPA_HCALL, 0, 0x1000);
  return Status::Ok();
}

void InitialSregs(kvm_sregs* s) {
  s->cs = Segment(0x33, 0xb, 3, true);
  s->ds = s->es = s->fs = s->gs = s->ss = Segment(0x2b, 0x3, 3, false);
  s->tr = kvm_segment{};
  s->tr.base = kTss;
  s->tr.limit = kTssLimit;
  s->tr.selector = kTssSelector;
  s->tr.type = 11;  // busy 64-bit TSS
  s->tr.present = 1;
  s->ldt = kvm_segment{};
  s->ldt.type = 2;
  s->ldt.present = 1;
  s->ldt.unusable = 1;
  s->gdt.base = FERRY_GPA_GDT;
  s->gdt.limit = kGdtLimit;
  s->idt.base = 0;
  s->idt.limit = 0;  // no IDT: any exception becomes a triple fault, reported as a crash
  s->cr0 = 0x80000000 | 0x10000 | 0x20 | 0x10 | 0x2 | 0x1;  // PG WP NE ET MP PE
  s->cr3 = kPml4;
  s->cr4 = 0x20 | 0x200 | 0x400;                            // PAE OSFXSR OSXMMEXCPT
  s->efer = 0x500 | 0x1;                                    // LMA LME SCE
}

void InitialRegs(const BootParams& p, uint32_t index, kvm_regs* r) {
  *r = kvm_regs{};
  r->rip = p.entry;
  r->rsp = p.mem_bytes - uint64_t{index} * FERRY_STACK_BYTES - 64;
  r->rdi = index;
  r->rsi = FERRY_GPA_BOOT_INFO;
  r->rflags = 0x2 | 0x3000;  // reserved bit 1, IOPL=3
}

}  // namespace ferry::hypervisor
