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
#define FERRY_HC_WAIT 4          /* args: timeout ns, event sum seen (see irq_seq). Blocks until an event or timeout. */
#define FERRY_HC_REPORT 5        /* args: gva, len of "key=value key=value" status words */
#define FERRY_HC_QUEUE_SETUP 6   /* args: queue, ring gpa, entries. ret: FERRY_E_* */
#define FERRY_HC_QUEUE_NOTIFY 7  /* args: queue. ret: FERRY_E_* */

/* Hypercall results for the queue calls. */
#define FERRY_E_OK 0
#define FERRY_E_NODEV 1   /* the VM has no such device */
#define FERRY_E_INVAL 2   /* bad ring address, size or alignment */
#define FERRY_E_BROKEN 3  /* the device refused this ring (see below); set it up again */

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
  /* Bumped by a device whenever it completed descriptors (block, net rx, net tx). A guest
   * passes verify_seq + stop_seq + irq_seq, read before it looked at its rings, to
   * FERRY_HC_WAIT, which returns at once if the sum has changed since. */
  uint64_t irq_seq;
  /* Devices present: disk capacity in 512-byte sectors (0: no disk); the NIC's MAC. */
  uint64_t blk_sectors;
  uint8_t net_mac[6];
  uint16_t net_present;
  uint32_t reserved1;
  uint32_t reserved2;
};

/* ---- Devices: descriptor rings in guest memory --------------------------------------------
 *
 * A queue is a ring the guest allocates in its own RAM (at or above FERRY_GPA_IMAGE_MIN,
 * 64-byte aligned, header + entries descriptors) and registers with FERRY_HC_QUEUE_SETUP.
 * The device starts at the ring's current `used`, so the guest sets avail = used (a fresh
 * ring: both zero) before the call; setting a queue up again is how a broken one recovers.
 * The guest fills desc[avail % entries], then publishes it by incrementing `avail` (release
 * store); FERRY_HC_QUEUE_NOTIFY tells the device. The device completes descriptors strictly
 * in order: it writes `status` (and `len` for received frames) into the descriptor, then
 * increments `used` (release store) and raises an event (irq_seq in the shared page), so a
 * guest blocked in FERRY_HC_WAIT wakes up. The guest may reuse slot i once used > i.
 * Counters run freely and wrap mod 2^32; the guest never posts more than `entries` ahead of
 * `used`. Block and transmit queues complete every posted descriptor before NOTIFY returns;
 * the receive queue completes a descriptor whenever a frame arrives into its buffer.
 *
 * The device trusts nothing in the ring: a descriptor with a bad op, length, sector or a
 * buffer outside guest RAM (or below FERRY_GPA_IMAGE_MIN) completes with
 * FERRY_STATUS_BAD_REQUEST; an `avail` more than `entries` ahead of the device breaks the
 * queue (NOTIFY returns FERRY_E_BROKEN and the device ignores it until set up again). */
#define FERRY_QUEUE_BLK 0
#define FERRY_QUEUE_NET_RX 1
#define FERRY_QUEUE_NET_TX 2
#define FERRY_QUEUE_COUNT 3
#define FERRY_RING_MAX_ENTRIES 256 /* entries: a power of two, 1..256 */

#define FERRY_BLK_READ 1
#define FERRY_BLK_WRITE 2
#define FERRY_BLK_FLUSH 3 /* everything completed before it is durable (fdatasync) */
#define FERRY_BLK_SECTOR 512
#define FERRY_BLK_MAX_BYTES (1024u * 1024u) /* per descriptor; len a multiple of 512 */

#define FERRY_NET_MAX_FRAME 1514 /* Ethernet header + 1500, no FCS */

#define FERRY_STATUS_OK 0
#define FERRY_STATUS_IOERR 1
#define FERRY_STATUS_BAD_REQUEST 2

struct ferry_desc {
  uint64_t addr;   /* guest-physical buffer */
  uint32_t len;    /* block, tx: bytes; rx: capacity in (>= FERRY_NET_MAX_FRAME), frame length out */
  uint16_t op;     /* block: FERRY_BLK_*; net: 0 */
  uint16_t status; /* written by the device: FERRY_STATUS_* */
  uint64_t sector; /* block: first 512-byte sector */
  uint64_t id;     /* the guest's cookie; the device leaves it alone */
};

struct ferry_ring {
  uint32_t avail; /* written by the guest */
  uint32_t reserved0;
  uint32_t used;  /* written by the device */
  uint32_t reserved1;
  uint64_t reserved[6];
  /* struct ferry_desc desc[entries] follows at offset 64 */
};
#define FERRY_RING_BYTES(entries) (64u + 32u * (uint32_t)(entries))

#define FERRY_EVENT_VERIFY 1u
#define FERRY_EVENT_STOP 2u

#ifdef __cplusplus
static_assert(sizeof(ferry_hcall_block) == 64, "hypercall block layout");
static_assert(sizeof(ferry_boot_info) == 40 + FERRY_MAX_ARGS, "boot info layout");
static_assert(sizeof(ferry_shared_page) == 80, "shared page layout");
static_assert(sizeof(ferry_desc) == 32, "descriptor layout");
static_assert(sizeof(ferry_ring) == 64, "ring header layout");
#else
_Static_assert(sizeof(struct ferry_hcall_block) == 64, "hypercall block layout");
_Static_assert(sizeof(struct ferry_shared_page) == 80, "shared page layout");
_Static_assert(sizeof(struct ferry_desc) == 32, "descriptor layout");
_Static_assert(sizeof(struct ferry_ring) == 64, "ring header layout");
#endif

#endif /* FERRY_HYPERVISOR_GUEST_ABI_H_ */
