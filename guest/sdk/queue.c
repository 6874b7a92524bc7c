/* The guest's side of a descriptor ring: registration and the doorbell (see queue.h). */
#include "queue.h"

uint32_t fg_queue_setup(struct fg_queue* q, uint32_t id, struct ferry_ring* ring, uint32_t entries) {
  /* Zero counters on both sides: the device resumes from ring->used, and a re-setup after a
   * broken queue abandons whatever was still posted. */
  memset(ring, 0, FERRY_RING_BYTES(entries));
  q->id = id;
  q->entries = entries;
  q->ring = ring;
  q->desc = (struct ferry_desc*)(ring + 1);
  q->avail = 0;
  q->consumed = 0;
  return (uint32_t)fg_hypercall(FERRY_HC_QUEUE_SETUP, id, (uint64_t)ring, entries);
}

uint32_t fg_queue_notify(const struct fg_queue* q) { return (uint32_t)fg_hypercall(FERRY_HC_QUEUE_NOTIFY, q->id, 0, 0); }
