/* Private to the guest SDK: the guest's side of one descriptor ring (guest_abi.h), shared by
 * the block and network drivers.
 *
 * The guest owns descriptors from index `consumed` (the oldest completion it has not yet
 * processed) up to `avail` (the next one it will post); the device owns [used, avail). Only
 * descriptors below ring->used, read with an acquire load, belong to the guest again, which
 * matters for the receive queue: the device completes those on its own thread at any time.
 * A slot is refilled only after its previous descriptor was consumed, so avail never runs
 * more than `entries` ahead of used. Not thread-safe: one vCPU drives each queue. */
#ifndef FERRY_GUEST_QUEUE_H_
#define FERRY_GUEST_QUEUE_H_

#include "ferry_guest.h"

struct fg_queue {
  uint32_t id;       /* FERRY_QUEUE_* */
  uint32_t entries;  /* a power of two, <= FERRY_RING_MAX_ENTRIES */
  struct ferry_ring* ring;
  struct ferry_desc* desc;
  uint32_t avail;    /* the guest's copy of ring->avail */
  uint32_t consumed; /* completions processed so far */
};

/* Declares a ring with its descriptors as one 64-byte aligned static object. */
#define FG_RING_STORAGE(name, n)  \
  static struct {                 \
    struct ferry_ring hdr;        \
    struct ferry_desc desc[n];    \
  } name __attribute__((aligned(64)))

/* Clears the ring header (the device starts at ring->used) and registers it. Returns
 * FERRY_E_* from the hypercall. */
uint32_t fg_queue_setup(struct fg_queue* q, uint32_t id, struct ferry_ring* ring, uint32_t entries);

/* Rings the doorbell; returns FERRY_E_*. */
uint32_t fg_queue_notify(const struct fg_queue* q);

static inline uint32_t fg_queue_used(const struct fg_queue* q) {
  return __atomic_load_n(&q->ring->used, __ATOMIC_ACQUIRE);
}

/* Slots the guest may fill now. */
static inline uint32_t fg_queue_space(const struct fg_queue* q) { return q->entries - (q->avail - q->consumed); }

static inline uint32_t fg_queue_slot(const struct fg_queue* q, uint32_t index) { return index & (q->entries - 1); }

/* Fills the next descriptor and hands it to the device (only while fg_queue_space() > 0):
 * the release store orders the descriptor's fields before the new avail. */
static inline void fg_queue_post(struct fg_queue* q, uint64_t addr, uint32_t len, uint16_t op, uint64_t sector,
                                 uint64_t id) {
  struct ferry_desc* d = &q->desc[fg_queue_slot(q, q->avail)];
  d->addr = addr;
  d->len = len;
  d->op = op;
  d->status = FERRY_STATUS_OK;
  d->sector = sector;
  d->id = id;
  q->avail++;
  __atomic_store_n(&q->ring->avail, q->avail, __ATOMIC_RELEASE);
}

#endif /* FERRY_GUEST_QUEUE_H_ */
