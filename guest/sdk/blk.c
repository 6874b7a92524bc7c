/* The paravirtual disk driver: batches of read/write/flush descriptors on one ring
 * (ferry_blk.h). The device serves a doorbell synchronously, so after each fg_queue_notify()
 * every posted descriptor is complete and the ring is empty again. */
#include "ferry_blk.h"

#include "ferry_guest.h"
#include "queue.h"

#define BLK_ENTRIES 256

FG_RING_STORAGE(blk_ring, BLK_ENTRIES);
static struct fg_queue blk_q;
static int blk_up;

/* One caller-visible op of the open batch; it may span several descriptors (desc.id = op). */
struct blk_op {
  uint16_t status;  /* FERRY_STATUS_*: the first failure among its descriptors */
  uint32_t pending; /* descriptors posted and not yet completed */
};
static struct blk_op ops[FG_BLK_BATCH_OPS];
static uint32_t nops;
static int batch_open;
static int batch_broken;       /* the ring broke during this batch; later adds fail at once */
static uint32_t batch_failed;  /* failed descriptors in this batch */

int fg_blk_init(void) {
  if (fg_shared()->blk_sectors == 0) return FG_BLK_E_NODEV;
  uint32_t r = fg_queue_setup(&blk_q, FERRY_QUEUE_BLK, &blk_ring.hdr, BLK_ENTRIES);
  if (r == FERRY_E_NODEV) return FG_BLK_E_NODEV;
  if (r != FERRY_E_OK) return FG_BLK_E_QUEUE;
  blk_up = 1;
  return 0;
}

uint64_t fg_blk_sectors(void) { return fg_shared()->blk_sectors; }

static void fail_op(uint32_t op, uint32_t descriptors) {
  ops[op].status = FERRY_STATUS_IOERR;
  batch_failed += descriptors;
}

/* Takes every completed descriptor back, charging failures to their ops. */
static void reap(void) {
  uint32_t used = fg_queue_used(&blk_q);
  while (blk_q.consumed != used) {
    const struct ferry_desc* d = &blk_q.desc[fg_queue_slot(&blk_q, blk_q.consumed)];
    uint64_t op = d->id;
    if (d->status != FERRY_STATUS_OK) {
      batch_failed++;
      if (op < nops && ops[op].status == FERRY_STATUS_OK) ops[op].status = d->status;
    }
    if (op < nops && ops[op].pending) ops[op].pending--;
    blk_q.consumed++;
  }
}

/* The device refused the ring or left descriptors behind: whatever it did not complete has
 * failed, and a fresh setup makes the queue usable for the next batch. */
static void break_queue(void) {
  for (uint32_t i = 0; i < nops; ++i) {
    if (ops[i].pending) fail_op(i, ops[i].pending);
    ops[i].pending = 0;
  }
  batch_broken = 1;
  if (fg_queue_setup(&blk_q, FERRY_QUEUE_BLK, &blk_ring.hdr, BLK_ENTRIES) != FERRY_E_OK) blk_up = 0;
}

static void kick(void) {
  if (blk_q.avail == blk_q.consumed) return;
  uint32_t r = fg_queue_notify(&blk_q);
  reap();
  if (r != FERRY_E_OK || blk_q.consumed != blk_q.avail) break_queue();
}

static void post(uint16_t kind, uint64_t sector, uint64_t addr, uint32_t len, uint32_t op) {
  if (!batch_broken && fg_queue_space(&blk_q) == 0) kick(); /* a batch bigger than the ring goes in parts */
  if (batch_broken || !blk_up) {
    fail_op(op, 1);
    return;
  }
  ops[op].pending++;
  fg_queue_post(&blk_q, addr, len, kind, sector, (uint64_t)op);
}

static int new_op(void) {
  if (!blk_up) return FG_BLK_E_NODEV;
  if (!batch_open) return FG_BLK_E_BUSY;
  if (nops == FG_BLK_BATCH_OPS) return FG_BLK_E_FULL;
  ops[nops].status = FERRY_STATUS_OK;
  ops[nops].pending = 0;
  return (int)nops++;
}

static int add_rw(uint16_t kind, uint64_t sector, uint64_t addr, uint64_t len) {
  uint64_t total = fg_blk_sectors();
  if (!blk_up) return FG_BLK_E_NODEV;
  if (len == 0 || len % FERRY_BLK_SECTOR != 0 || sector > total || len / FERRY_BLK_SECTOR > total - sector ||
      addr < FERRY_GPA_IMAGE_MIN || addr + len < addr) {
    return FG_BLK_E_INVAL;
  }
  int op = new_op();
  if (op < 0) return op;
  while (len) {
    uint32_t chunk = len > FERRY_BLK_MAX_BYTES ? FERRY_BLK_MAX_BYTES : (uint32_t)len;
    post(kind, sector, addr, chunk, (uint32_t)op);
    sector += chunk / FERRY_BLK_SECTOR;
    addr += chunk;
    len -= chunk;
  }
  return op;
}

int fg_blk_begin(void) {
  if (batch_open) return FG_BLK_E_BUSY;
  batch_open = 1;
  batch_broken = 0;
  batch_failed = 0;
  nops = 0;
  return 0;
}

int fg_blk_add_read(uint64_t sector, void* buf, uint64_t len) {
  return add_rw(FERRY_BLK_READ, sector, (uint64_t)buf, len);
}

int fg_blk_add_write(uint64_t sector, const void* buf, uint64_t len) {
  return add_rw(FERRY_BLK_WRITE, sector, (uint64_t)buf, len);
}

int fg_blk_add_flush(void) {
  int op = new_op();
  if (op >= 0) post(FERRY_BLK_FLUSH, 0, 0, 0, (uint32_t)op);
  return op;
}

int fg_blk_submit(void) {
  if (!batch_open) return FG_BLK_E_BUSY;
  if (!batch_broken) kick();
  batch_open = 0;
  return batch_broken ? FG_BLK_E_QUEUE : (int)batch_failed;
}

uint16_t fg_blk_op_status(int op) {
  return op >= 0 && (uint32_t)op < nops ? ops[op].status : FERRY_STATUS_BAD_REQUEST;
}

/* A single op is a batch of one; a failed add closes the batch it opened. */
static int single(int op) {
  if (op < 0) {
    batch_open = 0;
    return op;
  }
  int r = fg_blk_submit();
  if (r < 0) return r;
  return r ? FG_BLK_E_IO : 0;
}

int fg_blk_read(uint64_t sector, void* buf, uint64_t len) {
  int r = fg_blk_begin();
  return r < 0 ? r : single(fg_blk_add_read(sector, buf, len));
}

int fg_blk_write(uint64_t sector, const void* buf, uint64_t len) {
  int r = fg_blk_begin();
  return r < 0 ? r : single(fg_blk_add_write(sector, buf, len));
}

int fg_blk_flush(void) {
  int r = fg_blk_begin();
  return r < 0 ? r : single(fg_blk_add_flush());
}
