/* The guest SDK's driver for Ferry's paravirtual disk (FERRY_QUEUE_BLK in guest_abi.h).
 *
 * The disk is an array of 512-byte sectors. Requests go into a ring of 256 descriptors that
 * the device serves synchronously, in order, when the guest rings the doorbell, so every call
 * here returns with its requests completed. A batch collects several reads, writes and
 * flushes and submits them with one doorbell: fg_blk_begin(), fg_blk_add_*() (each returns an
 * op handle), fg_blk_submit(), then fg_blk_op_status(handle). A FLUSH makes every write
 * completed before it durable, so "writes, then a flush" in one batch is a durable commit.
 * Requests over 1 MiB are split into several descriptors; a batch that outgrows the ring is
 * sent in parts, in order, which changes nothing about ordering or durability.
 *
 * Buffers are the caller's: they must lie in guest RAM at or above 0x400000 (globals, the
 * free-memory range, vCPU stacks) and stay untouched from fg_blk_add_*() until
 * fg_blk_submit() returns. Not thread-safe: only one vCPU may use the disk. */
#ifndef FERRY_BLK_H_
#define FERRY_BLK_H_

#include <stdint.h>

#include "ferry/hypervisor/guest_abi.h"

#define FG_BLK_E_NODEV (-1) /* the VM has no disk, or fg_blk_init() was not called */
#define FG_BLK_E_INVAL (-2) /* length not a positive multiple of 512, beyond the disk, bad buffer */
#define FG_BLK_E_FULL (-3)  /* more than FG_BLK_BATCH_OPS ops in one batch */
#define FG_BLK_E_BUSY (-4)  /* batch misuse: single op or begin while one is open, add/submit without one */
#define FG_BLK_E_QUEUE (-5) /* the device refused the ring; it was set up again */
#define FG_BLK_E_IO (-6)    /* a single op completed with an error status */

#define FG_BLK_BATCH_OPS 256

/* Sets up the block queue. Returns 0 or FG_BLK_E_NODEV / FG_BLK_E_QUEUE. */
int fg_blk_init(void);
/* Disk capacity in 512-byte sectors (0: no disk). */
uint64_t fg_blk_sectors(void);

/* Single synchronous operations; 0 on success or a negative FG_BLK_E_*. */
int fg_blk_read(uint64_t sector, void* buf, uint64_t len);
int fg_blk_write(uint64_t sector, const void* buf, uint64_t len);
int fg_blk_flush(void);

/* Batches. begin returns 0 or FG_BLK_E_BUSY; add_* return an op handle (>= 0) or a negative
 * FG_BLK_E_*, in which case nothing was added. */
int fg_blk_begin(void);
int fg_blk_add_read(uint64_t sector, void* buf, uint64_t len);
int fg_blk_add_write(uint64_t sector, const void* buf, uint64_t len);
int fg_blk_add_flush(void);
/* Sends whatever is still queued and closes the batch. Returns the number of descriptors that
 * failed (0: every op succeeded), or FG_BLK_E_QUEUE if the device broke the ring (the ops it
 * did not complete count as FERRY_STATUS_IOERR). */
int fg_blk_submit(void);
/* After fg_blk_submit(): FERRY_STATUS_* of one op (the first failure of its descriptors). */
uint16_t fg_blk_op_status(int op);

#endif /* FERRY_BLK_H_ */
