/* ringfuzz: a hostile guest for the device models. It registers rings at bad places, posts
 * descriptors with random ops, lengths, sectors and buffer addresses (outside RAM, in the
 * VMM's system area, wrapping around), lets `avail` run ahead of the device, and sends frames
 * with someone else's MAC. The devices must refuse each bad request on its own (status
 * BAD_REQUEST, a broken queue, FERRY_E_INVAL) and keep serving good ones; the VMM must not
 * crash. At the end a good write, flush and read-back must still round-trip through the disk.
 *
 * Arguments: rounds=N (default 2000), seed=N. Needs a disk (--disk) and a NIC (--net).
 * Reports "workload=ringfuzz verdict=ok|bad rounds=N refused=N unexpected=N" and exits 0 when
 * every answer was the expected one. */
#include "ferry_guest.h"

#define ENTRIES 16

static uint8_t area[3 * 4096 + 64 * 1024] __attribute__((aligned(4096)));
static uint64_t rng;
static uint64_t refused, unexpected;

static struct ferry_desc* slot(struct ferry_ring* r, uint32_t i) {
  return (struct ferry_desc*)((uint8_t*)r + 64) + (i % ENTRIES);
}

static uint64_t setup(uint32_t queue, void* ring, uint64_t entries) {
  return fg_hypercall(FERRY_HC_QUEUE_SETUP, queue, (uint64_t)ring, entries);
}

static void expect(int ok, const char* what) {
  if (ok) return;
  if (unexpected++ < 5) fg_printf("ringfuzz: unexpected answer: %s\n", what);
}

/* Posts one descriptor on `r`, rings `queue`, returns the completed status. */
static uint16_t submit(uint32_t queue, struct ferry_ring* r, struct ferry_desc d) {
  uint32_t i = r->avail;
  d.status = 0xffff;
  *slot(r, i) = d;
  __atomic_store_n(&r->avail, i + 1, __ATOMIC_RELEASE);
  uint64_t e = fg_hypercall(FERRY_HC_QUEUE_NOTIFY, queue, 0, 0);
  expect(e == FERRY_E_OK, "notify of a well-formed ring");
  expect(__atomic_load_n(&r->used, __ATOMIC_ACQUIRE) == i + 1, "descriptor not completed by notify");
  return slot(r, i)->status;
}

/* A random buffer address: good, or one of the classes the device must refuse. */
static uint64_t random_addr(uint8_t* good, int* bad) {
  uint64_t mem = fg_boot()->mem_bytes;
  *bad = 1;
  switch (fg_xorshift(&rng) % 6) {
    case 0: return fg_xorshift(&rng);                         /* anywhere */
    case 1: return FERRY_GPA_SHARED;                          /* the VMM's page */
    case 2: return mem - 256;                                 /* runs off the end */
    case 3: return ~0ull - 100;                               /* wraps */
    default: *bad = 0; return (uint64_t)good;
  }
}

static void fuzz_block(struct ferry_ring* r, uint64_t rounds) {
  uint64_t sectors = fg_shared()->blk_sectors;
  uint8_t* buf = area + 2 * 4096;
  for (uint64_t n = 0; n < rounds; ++n) {
    int bad;
    struct ferry_desc d = {0};
    d.addr = random_addr(buf, &bad);
    uint32_t k = fg_xorshift(&rng) % 8;
    d.op = k < 5 ? (k % 2 ? FERRY_BLK_READ : FERRY_BLK_WRITE) : (k == 5 ? FERRY_BLK_FLUSH : (uint16_t)(k + 10));
    d.len = (fg_xorshift(&rng) % 4 == 0) ? (uint32_t)fg_xorshift(&rng) : 512u * (uint32_t)(1 + fg_xorshift(&rng) % 8);
    d.sector = (fg_xorshift(&rng) % 4 == 0) ? fg_xorshift(&rng) : fg_xorshift(&rng) % sectors;
    if (d.op == FERRY_BLK_FLUSH) {
      bad = d.len != 0;
    } else {
      bad |= d.op != FERRY_BLK_READ && d.op != FERRY_BLK_WRITE;
      bad |= d.len == 0 || d.len % 512 != 0 || d.len > sizeof area - 2 * 4096;
      bad |= d.sector >= sectors || d.len / 512 > sectors - d.sector;
    }
    uint16_t st = submit(FERRY_QUEUE_BLK, r, d);
    if (st == FERRY_STATUS_BAD_REQUEST) ++refused;
    /* Every bad one must be refused; a good one may only fail with an I/O error. */
    if (bad) expect(st == FERRY_STATUS_BAD_REQUEST, "bad block request accepted");
    else expect(st == FERRY_STATUS_OK, "good block request refused");
  }
  /* avail running ahead breaks the queue; a new setup mends it. */
  __atomic_store_n(&r->avail, r->used + ENTRIES + 5, __ATOMIC_RELEASE);
  expect(fg_hypercall(FERRY_HC_QUEUE_NOTIFY, FERRY_QUEUE_BLK, 0, 0) == FERRY_E_BROKEN, "runaway avail not refused");
  r->avail = r->used;
  expect(setup(FERRY_QUEUE_BLK, r, ENTRIES) == FERRY_E_OK, "re-setup after a broken queue");
}

static void fuzz_tx(struct ferry_ring* r, uint64_t rounds) {
  uint8_t* frame = area + 2 * 4096;
  const volatile uint8_t* mac = fg_shared()->net_mac;
  for (uint64_t n = 0; n < rounds; ++n) {
    int bad;
    struct ferry_desc d = {0};
    d.addr = random_addr(frame, &bad);
    d.len = (fg_xorshift(&rng) % 3 == 0) ? (uint32_t)(fg_xorshift(&rng) % 4000) : 60;
    int spoof = fg_xorshift(&rng) % 4 == 0;
    memset(frame, 0xff, 6);
    for (int i = 0; i < 6; ++i) frame[6 + i] = mac[i] ^ (spoof && i == 5 ? 1 : 0);
    frame[12] = 0x88, frame[13] = 0xb5; /* local experimental ethertype: nobody acts on it */
    bad |= d.len < 14 || d.len > FERRY_NET_MAX_FRAME || spoof;
    uint16_t st = submit(FERRY_QUEUE_NET_TX, r, d);
    if (st == FERRY_STATUS_BAD_REQUEST) ++refused;
    if (bad) expect(st == FERRY_STATUS_BAD_REQUEST, "bad frame sent");
    else expect(st == FERRY_STATUS_OK, "good frame refused");
  }
}

static void roundtrip(struct ferry_ring* r) {
  uint8_t* out = area + 2 * 4096;
  uint8_t* in = out + 8192;
  for (int i = 0; i < 4096; ++i) out[i] = (uint8_t)fg_xorshift(&rng);
  struct ferry_desc w = {(uint64_t)out, 4096, FERRY_BLK_WRITE, 0, 8, 0};
  struct ferry_desc f = {0, 0, FERRY_BLK_FLUSH, 0, 0, 0};
  struct ferry_desc rd = {(uint64_t)in, 4096, FERRY_BLK_READ, 0, 8, 0};
  expect(submit(FERRY_QUEUE_BLK, r, w) == FERRY_STATUS_OK, "final write");
  expect(submit(FERRY_QUEUE_BLK, r, f) == FERRY_STATUS_OK, "final flush");
  expect(submit(FERRY_QUEUE_BLK, r, rd) == FERRY_STATUS_OK, "final read");
  expect(memcmp(out, in, 4096) == 0, "read-back differs from what was written");
}

int guest_main(uint32_t vcpu, uint32_t nvcpus) {
  (void)nvcpus;
  if (vcpu != 0) return 0;
  uint64_t rounds = fg_arg_u64("rounds", 2000);
  rng = fg_arg_u64("seed", 1) * 0x9e3779b97f4a7c15ull | 1;
  if (fg_shared()->blk_sectors < 64 || !fg_shared()->net_present) fg_panic("ringfuzz needs --disk (>= 32K) and --net");
  struct ferry_ring* blk = (struct ferry_ring*)area;
  struct ferry_ring* tx = (struct ferry_ring*)(area + 4096);
  /* Bad placements first: each must be refused and leave no queue behind. */
  expect(setup(FERRY_QUEUE_BLK, (void*)FERRY_GPA_SHARED, ENTRIES) == FERRY_E_INVAL, "ring in the system area");
  expect(setup(FERRY_QUEUE_BLK, area + 8, ENTRIES) == FERRY_E_INVAL, "misaligned ring");
  expect(setup(FERRY_QUEUE_BLK, area, 3) == FERRY_E_INVAL, "ring of 3 entries");
  expect(setup(FERRY_QUEUE_NET_TX, (void*)(fg_boot()->mem_bytes - 64), ENTRIES) == FERRY_E_INVAL, "ring past RAM");
  expect(setup(7, area, ENTRIES) == FERRY_E_NODEV, "unknown queue");
  expect(fg_hypercall(FERRY_HC_QUEUE_NOTIFY, FERRY_QUEUE_BLK, 0, 0) == FERRY_E_INVAL, "notify without a ring");
  expect(setup(FERRY_QUEUE_BLK, blk, ENTRIES) == FERRY_E_OK, "block ring");
  expect(setup(FERRY_QUEUE_NET_TX, tx, ENTRIES) == FERRY_E_OK, "tx ring");
  fuzz_block(blk, rounds);
  fuzz_tx(tx, rounds / 4);
  roundtrip(blk);
  const char* verdict = unexpected ? "bad" : "ok";
  fg_printf("ringfuzz: %s: %lu rounds, %lu refused, %lu unexpected\n", verdict, rounds, refused, unexpected);
  fg_report("workload=ringfuzz verdict=%s rounds=%lu refused=%lu unexpected=%lu", verdict, rounds, refused, unexpected);
  return unexpected ? 1 : 0;
}
