/* The contract between Ferry's VMM and its paravirtual guests. C-compatible: the guest SDK
 * (freestanding C) and the VMM (C++) both include it.
 *
 * A guest runs entirely at CPL3 with IOPL=3 on identity-mapped page tables. It talks to the
 * VMM by filling its vCPU's hypercall block and executing `out %eax, %dx` with
 * dx = FERRY_PORT_HYPERCALL and eax = the hypercall number; the VMM writes the result into
 * the block before the vCPU continues. Everything here is shared memory on the same machine,
 * so plain structs with fixed-width fields are the format; offsets are checked by
 * static asserts on both sides.
 *
 * Guest-physical layout (identity mapped, 4 KiB pages below 2 MiB, 2 MiB pages above):
 *   0x0000  unmapped (null pointer trap)
 *   0x1000  GDT and TSS            supervisor-only
 *   0x2000  boot info              user read-only
 *   0x3000  shared page            user read-only (clock, events)
 *   0x4000  hypercall blocks       user read-write, 64 bytes per vCPU
 *   0x5000  TSS with I/O bitmap    supervisor-only (all ports permitted)
 *   0x8000  page tables            supervisor-only
 *   0x400000  guest image (ELF, fixed link address), then free memory, then vCPU stacks.
 */
#ifndef FERRY_HYPERVISOR_GUEST_ABI_H_
#define FERRY_HYPERVISOR_GUEST_ABI_H_

#include <stdint.h>

#define FERRY_PORT_HYPERCALL 0x0510

#define FERRY_HC_CONSOLE_WRITE 1 /* args: gva, len */
#define FERRY_HC_SHUTDOWN 2      /* args: exit code. Does not return. */
#define FERRY_HC_PANIC 3         /* args: gva, len of the message. Does not return. */
#define FERRY_HC_WAIT 4          /* args: timeout ns. Blocks until an event or timeout. */
#define FERRY_HC_REPORT 5        /* args: gva, len of "key=value key=value" status words */

#define FERRY_GPA_GDT 0x1000ull
#define FERRY_GPA_BOOT_INFO 0x2000ull
#define FERRY_GPA_SHARED 0x3000ull
#define FERRY_GPA_HCALL 0x4000ull
#define FERRY_GPA_TSS 0x5000ull
#define FERRY_GPA_PAGE_TABLES 0x8000ull
#define FERRY_GPA_IMAGE_MIN 0x400000ull

#define FERRY_MAX_VCPUS 64
#define FERRY_BOOT_MAGIC 0x544f4f4259525245ull /* "ERRYBOOT" */
#define FERRY_BOOT_VERSION 1
#define FERRY_MAX_ARGS 1024
#define FERRY_STACK_BYTES (256 * 1024)

struct ferry_hcall_block {
  uint64_t args[4];
  uint64_t ret;
  uint64_t reserved[3];
};

struct ferry_boot_info {
  uint64_t magic;
  uint32_t version;
  uint32_t vcpus;
  uint64_t mem_bytes;
  /* Free guest RAM for the workload, [free_start, free_end), 2 MiB aligned. */
  uint64_t free_start;
  uint64_t free_end;
  char args[FERRY_MAX_ARGS]; /* NUL-terminated "key=value" words */
};

/* Paravirtual clock: guest_ns = ns_base + ((rdtsc() - tsc_base) * tsc_mul) >> 32, read under
 * the seqlock clock_version (odd while the VMM rewrites it). The VMM rewrites the clock on
 * restore and migration so guest time continues forward without a jump backward. */
struct ferry_shared_page {
  uint32_t clock_version;
  uint32_t reserved0;
  uint64_t tsc_base;
  uint64_t ns_base;
  uint64_t tsc_mul;
  /* Bumped by the VMM to ask the guest to verify itself (after restore or migration). */
  uint64_t verify_seq;
  /* Bumped by the VMM to ask the guest to shut down cleanly. */
  uint64_t stop_seq;
};

#define FERRY_EVENT_VERIFY 1u
#define FERRY_EVENT_STOP 2u

#ifdef __cplusplus
static_assert(sizeof(ferry_hcall_block) == 64, "hypercall block layout");
static_assert(sizeof(ferry_boot_info) == 40 + FERRY_MAX_ARGS, "boot info layout");
static_assert(sizeof(ferry_shared_page) == 48, "shared page layout");
#else
_Static_assert(sizeof(struct ferry_hcall_block) == 64, "hypercall block layout");
_Static_assert(sizeof(struct ferry_shared_page) == 48, "shared page layout");
#endif

#endif /* FERRY_HYPERVISOR_GUEST_ABI_H_ */
