/* kvstore: a UDP key-value service whose PUTs are durable on the paravirtual disk; the
 * workload for Ferry's PV block and net devices, and for moving a VM that serves clients.
 *
 * Protocol: ferry_kvstore.h (one 32-byte request per datagram, one reply per request).
 * vCPU 0 alone drives the NIC and the disk; the other vCPUs idle. Each round drains what has
 * arrived (at most FG_NET_RX_BUFFERS datagrams) into a batch, applies its PUTs to the
 * in-memory table, writes the changed records plus one FLUSH in a single submission, and only
 * then answers the whole batch: nothing is acknowledged before it is durable, and GETs see the
 * batch's PUTs. A PUT whose write or flush failed is answered FKV_ST_IO_ERROR, its table entry
 * reverts, and the old record is written back (best effort) so the disk keeps matching the
 * table. Malformed requests get FKV_ST_BAD_REQUEST if their first 16 bytes (magic, op,
 * req_id) arrived, and no answer otherwise.
 *
 * Disk layout (512-byte sectors, fields little-endian, the rest of each sector zero):
 *   sector 0      header: "FKVDISK1" | version u32 = 1 | reserved u32 = 0 | keys u64 |
 *                 checksum u64 of the three words before
 *   sector 1 + k  key k:  "FKVREC01" | key u64 = k | value u64 | checksum u64 of the three
 *                 words before; an all-zero sector: key k was never written
 * A disk without the header is formatted: records zeroed and flushed, then the header written
 * and flushed, so a crash midway leaves a disk that is formatted again. A header for another
 * key count stops the guest, as does any record that is neither zero nor valid.
 *
 * Verify events (after restore or migration) re-read every record and compare it with the
 * table; reports then carry verify_seq, verify_pages (records checked), verify_errors and
 * verdict. Arguments: ip=A.B.C.D (required), port=N (default 7000), keys=N (default 4096),
 * ballast_mib=N (default 0: N MiB of data past the table, for migrations to move). */
#include "ferry_blk.h"
#include "ferry_guest.h"
#include "ferry_kvstore.h"
#include "ferry_net.h"

#define SECTOR FERRY_BLK_SECTOR
#define HEADER_MAGIC 0x314b534944564b46ull /* "FKVDISK1" as little-endian bytes */
#define RECORD_MAGIC 0x3130434552564b46ull /* "FKVREC01" */
#define DISK_VERSION 1
#define READ_CHUNK (256u * 1024)   /* bytes per read descriptor when scanning the records */
#define IO_BYTES (4 * READ_CHUNK)  /* the scan buffer: one submission of four descriptors */
#define BATCH_MAX FG_NET_RX_BUFFERS /* one poll delivers at most this many datagrams */
#define REPORT_NS 200000000ull
#define IDLE_WAIT_NS 50000000ull

enum { REC_ABSENT, REC_OK, REC_CORRUPT };

struct entry {
  uint64_t value;
  uint64_t present;
};

struct request {
  uint32_t ip;
  uint16_t port;
  uint8_t op;     /* as received, echoed */
  uint8_t status; /* FKV_ST_BAD_REQUEST on arrival, else decided when served */
  uint64_t req_id, key, value;
};

struct batch {
  struct request req[BATCH_MAX];
  uint32_t n;
};

/* A key the batch changed: its entry before the batch, and whether the new one is durable. */
struct change {
  uint64_t key;
  struct entry old;
  int op; /* the write op that carries its record */
  int durable;
};

static uint64_t nkeys;
static uint16_t port;
static struct entry* table; /* nkeys entries in free memory */
static uint8_t* io_buf;     /* IO_BYTES in free memory, for format, load and verify */
static uint8_t stage[BATCH_MAX][SECTOR] __attribute__((aligned(64)));
static struct batch batch;
static struct change changes[BATCH_MAX], redo[BATCH_MAX];
static struct {
  uint64_t puts, gets, batches, flushes, bad, io_errors, unsent;
  uint64_t verify_seq, verify_pages, verify_errors;
} st;

static void put_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

static uint64_t checksum(uint64_t a, uint64_t b, uint64_t c) {
  return fg_mix64(fg_mix64(fg_mix64(a ^ 0x6b7673746f7265ull) ^ b) ^ c);
}

static int all_zero(const uint8_t* p, uint32_t len) {
  for (uint32_t i = 0; i < len; ++i) {
    if (p[i]) return 0;
  }
  return 1;
}

static void encode_record(uint8_t* s, uint64_t key, const struct entry* e) {
  memset(s, 0, SECTOR);
  if (!e->present) return; /* a key reverted to "never written" */
  put_le(s, RECORD_MAGIC, 8);
  put_le(s + 8, key, 8);
  put_le(s + 16, e->value, 8);
  put_le(s + 24, checksum(RECORD_MAGIC, key, e->value), 8);
}

static int decode_record(const uint8_t* s, uint64_t key, uint64_t* value) {
  if (all_zero(s, SECTOR)) return REC_ABSENT;
  uint64_t magic = get_le(s, 8), k = get_le(s + 8, 8), v = get_le(s + 16, 8);
  if (magic != RECORD_MAGIC || k != key || get_le(s + 24, 8) != checksum(magic, k, v) || !all_zero(s + 32, SECTOR - 32)) {
    return REC_CORRUPT;
  }
  *value = v;
  return REC_OK;
}

/* Reads the records of keys [first, first + count) into io_buf in READ_CHUNK descriptors. */
static int read_records(uint64_t first, uint64_t count) {
  if (fg_blk_begin() != 0) return -1;
  for (uint64_t off = 0; off < count * SECTOR; off += READ_CHUNK) {
    uint64_t n = count * SECTOR - off < READ_CHUNK ? count * SECTOR - off : READ_CHUNK;
    if (fg_blk_add_read(1 + first + off / SECTOR, io_buf + off, n) < 0) break;
  }
  return fg_blk_submit() == 0 ? 0 : -1; /* a failed add leaves fewer ops, caught here too */
}

static void format_disk(void) {
  fg_printf("kvstore: formatting the disk for %lu keys\n", nkeys);
  memset(io_buf, 0, IO_BYTES);
  for (uint64_t k = 0; k < nkeys; k += IO_BYTES / SECTOR) {
    uint64_t n = nkeys - k < IO_BYTES / SECTOR ? nkeys - k : IO_BYTES / SECTOR;
    if (fg_blk_write(1 + k, io_buf, n * SECTOR) != 0) fg_panic("kvstore: formatting the disk failed (records)");
  }
  if (fg_blk_flush() != 0) fg_panic("kvstore: formatting the disk failed (flush)");
  put_le(io_buf, HEADER_MAGIC, 8);
  put_le(io_buf + 8, DISK_VERSION, 4);
  put_le(io_buf + 12, 0, 4); /* reserved */
  put_le(io_buf + 16, nkeys, 8);
  put_le(io_buf + 24, checksum(HEADER_MAGIC, get_le(io_buf + 8, 8), nkeys), 8);
  if (fg_blk_write(0, io_buf, SECTOR) != 0 || fg_blk_flush() != 0) fg_panic("kvstore: formatting the disk failed (header)");
}

static void load_disk(void) {
  if (fg_blk_read(0, io_buf, SECTOR) != 0) fg_panic("kvstore: cannot read the disk header");
  if (get_le(io_buf, 8) != HEADER_MAGIC) {
    format_disk();
  } else {
    uint64_t version = get_le(io_buf + 8, 4), keys = get_le(io_buf + 16, 8);
    if (get_le(io_buf + 24, 8) != checksum(HEADER_MAGIC, get_le(io_buf + 8, 8), keys)) {
      fg_panic("kvstore: disk header corrupt");
    }
    if (version != DISK_VERSION) fg_panic("kvstore: disk format version %lu, this guest reads %u", version, DISK_VERSION);
    if (keys != nkeys) fg_panic("kvstore: the disk holds %lu keys but keys=%lu was given", keys, nkeys);
  }
  uint64_t stored = 0;
  for (uint64_t k = 0; k < nkeys; k += IO_BYTES / SECTOR) {
    uint64_t n = nkeys - k < IO_BYTES / SECTOR ? nkeys - k : IO_BYTES / SECTOR;
    if (read_records(k, n) != 0) fg_panic("kvstore: reading records %lu..%lu failed", k, k + n - 1);
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t v = 0;
      int r = decode_record(io_buf + i * SECTOR, k + i, &v);
      if (r == REC_CORRUPT) fg_panic("kvstore: disk record %lu corrupt", k + i);
      table[k + i].value = v;
      table[k + i].present = r == REC_OK;
      stored += r == REC_OK;
    }
  }
  fg_printf("kvstore: loaded %lu stored keys of %lu\n", stored, nkeys);
}

static void verify(uint64_t seq) {
  uint64_t errors = 0;
  for (uint64_t k = 0; k < nkeys; k += IO_BYTES / SECTOR) {
    uint64_t n = nkeys - k < IO_BYTES / SECTOR ? nkeys - k : IO_BYTES / SECTOR;
    int read_ok = read_records(k, n) == 0;
    for (uint64_t i = 0; i < n; ++i) {
      const struct entry* e = &table[k + i];
      uint64_t v = 0;
      int r = read_ok ? decode_record(io_buf + i * SECTOR, k + i, &v) : REC_CORRUPT;
      if (r == (e->present ? REC_OK : REC_ABSENT) && v == (e->present ? e->value : 0)) continue;
      if (errors++ < 8) {
        fg_printf("kvstore: verify: key %lu: disk %s %lu, table %s %lu\n", k + i,
                  !read_ok ? "unreadable" : r == REC_OK ? "holds" : r == REC_ABSENT ? "empty" : "corrupt", v,
                  e->present ? "holds" : "empty", e->value);
      }
    }
  }
  st.verify_seq = seq;
  st.verify_pages = nkeys;
  st.verify_errors = errors;
  fg_printf("kvstore: verify %s: %lu records checked, %lu mismatches (verify_seq=%lu)\n", errors ? "FAILED" : "ok",
            nkeys, errors, seq);
}

static void report(void) {
  const struct fg_net_stats* ns = fg_net_stats();
  char ip[16];
  fg_report("workload=kvstore ip=%s port=%u keys=%lu puts=%lu gets=%lu batches=%lu flushes=%lu bad=%lu "
            "io_errors=%lu unsent=%lu rx_frames=%lu rx_dropped=%lu tx_frames=%lu verify_seq=%lu verify_pages=%lu "
            "verify_errors=%lu verdict=%s",
            fg_ip_format(fg_net_ip(), ip), port, nkeys, st.puts, st.gets, st.batches, st.flushes, st.bad,
            st.io_errors, st.unsent, ns->rx_frames, ns->rx_dropped, ns->tx_frames, st.verify_seq,
            st.verify_pages, st.verify_errors, st.verify_errors ? "bad" : "ok");
}

static void on_datagram(void* ctx, uint32_t src_ip, uint16_t src_port, uint16_t dst_port, const uint8_t* p,
                        uint32_t len) {
  struct batch* b = ctx;
  if (dst_port != port || src_port == 0) return; /* not for the service, or nowhere to answer */
  if (len < 16 || b->n == BATCH_MAX) {           /* no req_id to answer with */
    st.bad++;
    return;
  }
  struct request* r = &b->req[b->n++];
  r->ip = src_ip;
  r->port = src_port;
  r->op = p[4];
  r->req_id = get_le(p + 8, 8);
  r->key = len >= 24 ? get_le(p + 16, 8) : 0;
  r->value = len >= 32 ? get_le(p + 24, 8) : 0;
  r->status = FKV_ST_OK;
  if (len != FKV_MSG_BYTES || get_le(p, 4) != FKV_MAGIC || (r->op != FKV_OP_GET && r->op != FKV_OP_PUT) ||
      r->key >= nkeys) {
    r->status = FKV_ST_BAD_REQUEST;
    st.bad++;
  }
}

static struct change* find_change(struct change* c, uint32_t n, uint64_t key) {
  for (uint32_t i = 0; i < n; ++i) {
    if (c[i].key == key) return &c[i];
  }
  return 0;
}

/* Writes the table's current record for each change (sorted by key; adjacent keys share one
 * descriptor) and one FLUSH in a single submission, and marks which ones are durable. */
static void write_records(struct change* c, uint32_t n) {
  if (fg_blk_begin() != 0) fg_panic("kvstore: disk batch already open");
  for (uint32_t i = 0; i < n; ++i) encode_record(stage[i], c[i].key, &table[c[i].key]);
  for (uint32_t i = 0, j; i < n; i = j) {
    for (j = i + 1; j < n && c[j].key == c[j - 1].key + 1; ++j) {
    }
    int op = fg_blk_add_write(1 + c[i].key, stage[i], (uint64_t)(j - i) * SECTOR);
    for (uint32_t m = i; m < j; ++m) c[m].op = op;
  }
  int flush = fg_blk_add_flush();
  int failed = fg_blk_submit();
  st.flushes++;
  int flushed = failed >= 0 && flush >= 0 && fg_blk_op_status(flush) == FERRY_STATUS_OK;
  for (uint32_t i = 0; i < n; ++i) c[i].durable = flushed && c[i].op >= 0 && fg_blk_op_status(c[i].op) == FERRY_STATUS_OK;
}

/* Makes the batch's PUTs durable, or reverts the ones that are not. */
static void commit(uint32_t n) {
  for (uint32_t i = 1; i < n; ++i) { /* insertion sort by key, so neighbours coalesce */
    struct change c = changes[i];
    uint32_t j = i;
    for (; j > 0 && changes[j - 1].key > c.key; --j) changes[j] = changes[j - 1];
    changes[j] = c;
  }
  write_records(changes, n);
  uint32_t failed = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (changes[i].durable) continue;
    table[changes[i].key] = changes[i].old;
    redo[failed++] = changes[i];
  }
  if (!failed) return;
  /* The failed writes may have reached the disk anyway; put the old records back. */
  write_records(redo, failed);
  uint32_t left = 0;
  for (uint32_t i = 0; i < failed; ++i) left += !redo[i].durable;
  fg_printf("kvstore: disk write failed for %u keys; %u old records could not be restored\n", failed, left);
}

static void reply(const struct request* r) {
  uint8_t m[FKV_MSG_BYTES];
  put_le(m, FKV_MAGIC, 4);
  m[4] = r->op;
  m[5] = r->status;
  put_le(m + 6, 0, 2); /* reserved */
  put_le(m + 8, r->req_id, 8);
  put_le(m + 16, r->key, 8);
  put_le(m + 24, r->value, 8);
  if (fg_udp_send(r->ip, port, r->port, m, sizeof m) != 0) st.unsent++;
}

/* Returns 1 if something in it deserves an immediate report. */
static int serve(struct batch* b) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < b->n; ++i) {
    struct request* r = &b->req[i];
    if (r->status != FKV_ST_OK || r->op != FKV_OP_PUT) continue;
    if (!find_change(changes, n, r->key)) changes[n++] = (struct change){r->key, table[r->key], -1, 0};
    table[r->key] = (struct entry){r->value, 1};
  }
  if (n) commit(n);
  uint64_t io_errors = st.io_errors;
  for (uint32_t i = 0; i < b->n; ++i) {
    struct request* r = &b->req[i];
    if (r->status == FKV_ST_OK && r->op == FKV_OP_PUT) {
      r->status = find_change(changes, n, r->key)->durable ? FKV_ST_OK : FKV_ST_IO_ERROR;
      if (r->status == FKV_ST_OK) st.puts++;
      else st.io_errors++;
    } else if (r->status == FKV_ST_OK) {
      const struct entry* e = &table[r->key];
      r->status = e->present ? FKV_ST_OK : FKV_ST_NOT_FOUND;
      r->value = e->present ? e->value : 0;
      st.gets++;
    }
    reply(r);
  }
  (void)fg_net_flush();
  st.batches++;
  return st.io_errors != io_errors;
}

static void setup(void) {
  char text[32];
  uint32_t ip = 0;
  if (!fg_arg_str("ip", text, sizeof text) || fg_ip_parse(text, &ip) != 0) fg_panic("kvstore needs ip=A.B.C.D");
  uint64_t p = fg_arg_u64("port", FKV_DEFAULT_PORT);
  if (p == 0 || p > 65535) fg_panic("kvstore: port=%lu is not a UDP port", p);
  port = (uint16_t)p;
  nkeys = fg_arg_u64("keys", 4096);
  if (nkeys == 0) fg_panic("kvstore: keys=0 leaves nothing to store");

  const uint64_t sectors = fg_shared()->blk_sectors;
  if (sectors == 0) fg_panic("kvstore needs a disk (ferry run --disk IMAGE)");
  if (!fg_shared()->net_present) fg_panic("kvstore needs a NIC (ferry run --net TAP)");
  if (nkeys > sectors - 1) {
    fg_panic("kvstore: keys=%lu needs a disk of %lu sectors, this one has %lu (ferry run --disk IMAGE)", nkeys,
             nkeys + 1, sectors);
  }
  const struct ferry_boot_info* b = fg_boot();
  uint64_t free_bytes = b->free_end - b->free_start;
  if (free_bytes < IO_BYTES || nkeys > (free_bytes - IO_BYTES) / sizeof(struct entry)) {
    fg_panic("kvstore: keys=%lu does not fit in the guest's %lu MiB of free memory", nkeys, free_bytes >> 20);
  }
  io_buf = (uint8_t*)b->free_start;
  table = (struct entry*)(b->free_start + IO_BYTES);
  /* ballast_mib=N: N MiB past the table filled with data, so that a migration has RAM to move
   * beyond the few pages the store touches (tests that must catch a post-copy in flight). */
  const uint64_t ballast = fg_arg_u64("ballast_mib", 0) << 20;
  const uint64_t used = IO_BYTES + nkeys * sizeof(struct entry);
  if (ballast > free_bytes - used) {
    fg_panic("kvstore: ballast_mib=%lu does not fit beside %lu keys in %lu MiB", ballast >> 20, nkeys, free_bytes >> 20);
  }
  uint64_t* w = (uint64_t*)(b->free_start + ((used + 4095) & ~4095ull));
  for (uint64_t i = 0; i < ballast / 8 && (uint64_t)(w + i) + 8 <= b->free_end; ++i) w[i] = (i + 1) * 0x9e3779b97f4a7c15ull;

  if (fg_blk_init() != 0) fg_panic("kvstore: the disk refused its queue");
  load_disk();
  if (fg_net_init(ip) != 0) fg_panic("kvstore: the NIC refused its queues");
  char ip_text[16], mac_text[18];
  fg_printf("kvstore: serving %lu keys on %s:%u (disk %lu sectors, mac %s)\n", nkeys, fg_ip_format(ip, ip_text), port,
            sectors, fg_mac_format(fg_net_mac(), mac_text));
}

int guest_main(uint32_t vcpu, uint32_t nvcpus) {
  (void)nvcpus;
  if (vcpu != 0) return 0; /* the runtime parks secondary vCPUs in fg_wait */
  _Static_assert(BATCH_MAX >= FG_NET_RX_BUFFERS, "a poll must fit in one batch");
  setup();
  report();
  const uint64_t stop = fg_stop_seq();
  uint64_t verified = 0, last_report = fg_now_ns();
  while (fg_stop_seq() == stop) {
    int notable = 0;
    uint64_t vseq = fg_verify_seq();
    if (vseq != verified) {
      verify(vseq);
      verified = vseq;
      notable = 1;
    }
    /* Read before looking at the rings, so a frame arriving after the poll still wakes us. */
    uint64_t seen = fg_event_count();
    batch.n = 0;
    int frames = fg_net_poll(on_datagram, &batch);
    if (batch.n) notable |= serve(&batch);
    uint64_t now = fg_now_ns();
    if (notable || now - last_report >= REPORT_NS) {
      report();
      last_report = now;
    }
    if (frames == 0 && !notable) fg_wait_events(seen, IDLE_WAIT_NS);
  }
  report();
  fg_printf("kvstore: stopping after %lu puts and %lu gets\n", st.puts, st.gets);
  return 0;
}
