/* The kvstore guest's UDP protocol, shared by the guest (C, x86: little-endian structs) and
 * the host's load client (C++, which encodes the same layout byte by byte).
 *
 * One request per datagram, one reply per request, both a struct fkv_msg (32 bytes,
 * little-endian). The reply echoes op, req_id and key. PUT stores `value` under `key` and is
 * answered only after the record is durable on the PV disk (written and flushed); GET answers
 * with the value of the last PUT of `key` that was acknowledged (FKV_ST_NOT_FOUND: none).
 * Keys run from 0 to the guest's keys= argument minus one. A request whose first 16 bytes
 * (magic, op, req_id) arrived but which is otherwise wrong (size, magic, op, key out of range)
 * is answered FKV_ST_BAD_REQUEST with what could be read echoed (key 0 if cut off); anything
 * shorter is dropped unanswered. */
#ifndef FERRY_KVSTORE_H_
#define FERRY_KVSTORE_H_

#include <stdint.h>

#define FKV_MAGIC 0x31564b46u /* "FKV1" */
#define FKV_DEFAULT_PORT 7000
#define FKV_MSG_BYTES 32

#define FKV_OP_GET 1
#define FKV_OP_PUT 2

#define FKV_ST_OK 0
#define FKV_ST_NOT_FOUND 1
#define FKV_ST_BAD_REQUEST 2 /* unknown op, key out of range */
#define FKV_ST_IO_ERROR 3    /* the disk failed the write; nothing acknowledged */

struct fkv_msg {
  uint32_t magic;
  uint8_t op;
  uint8_t status; /* replies only */
  uint16_t reserved;
  uint64_t req_id;
  uint64_t key;
  uint64_t value;
};

#ifdef __cplusplus
static_assert(sizeof(fkv_msg) == FKV_MSG_BYTES, "kvstore message layout");
#else
_Static_assert(sizeof(struct fkv_msg) == FKV_MSG_BYTES, "kvstore message layout");
#endif

#endif /* FERRY_KVSTORE_H_ */
