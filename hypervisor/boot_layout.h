// Builds what a Ferry guest finds at its first instruction: GDT and TSS, identity page tables
// (user-accessible except the VMM's own structures), the boot-info block, and the initial
// CPL3 long-mode register state of each vCPU. Layout constants are in guest_abi.h.
// Pure functions over GuestMemory; called before any vCPU runs.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

struct BootParams {
  uint64_t mem_bytes = 0;
  uint32_t vcpus = 1;
  std::string args;
  uint64_t entry = 0;
  uint64_t image_end = 0;
};

// Smallest guest RAM that holds the system area, an image and the stacks.
uint64_t MinimumMemory(uint32_t vcpus);

// Writes GDT, TSS, page tables and boot info; the image must already be loaded.
Status WriteBootStructures(const BootParams& params, GuestMemory& memory);

// Segment and control registers for 64-bit CPL3 with paging, shared by all vCPUs.
void InitialSregs(kvm_sregs* sregs);
// General registers for vCPU `index`: rip = entry, rsp = its stack, rdi = index,
// rsi = boot info address, RFLAGS.IOPL = 3.
void InitialRegs(const BootParams& params, uint32_t index, kvm_regs* regs);

}  // namespace ferry::hypervisor
