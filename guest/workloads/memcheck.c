/* memcheck: the oracle for "no page lost".
 *
 * Every data page carries its own identity, sequence number and checksum; a record array
 * (the guest's own memory of what it wrote) holds each page's latest sequence. A page is
 * good only if its header matches its index, its sequence equals the record, and its
 * checksum matches its body: a flipped byte fails the checksum, a stale (lost) page fails
 * the sequence check. Each vCPU owns the pages i with i % nvcpus == vcpu, rewrites random
 * ones (verifying each before overwriting, so corruption is never papered over) and sweeps
 * all of its pages continuously. A verify event from the VMM triggers a full pass on every
 * vCPU; vCPU 0 reports the verdict to the console and the status API.
 *
 * Arguments: mib=N (data size, default: all free memory), batch=N (pages per write burst). */
#include "ferry_guest.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define MAGIC 0x4d454d434845434bull /* "MEMCHECK" */
#define MAX_VCPUS FERRY_MAX_VCPUS

struct vcpu_result {
  volatile uint64_t verify_done; /* the verify_seq this vCPU last completed a full pass for */
  volatile uint64_t verify_errors;
  volatile uint64_t verify_pages;
  volatile uint64_t errors;       /* all errors seen (sweeps, rewrites, full passes) */
  volatile uint64_t writes;
  volatile uint64_t sweeps;
  volatile uint64_t max_pause_ns;
  uint64_t pad;
};

static struct vcpu_result results[MAX_VCPUS];
static uint64_t* record; /* record[i] = latest sequence written to page i */
static uint8_t* pages;
static uint64_t npages;
static volatile uint32_t ready;

static uint64_t body_checksum(const uint64_t* w) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (uint32_t i = 3; i < WORDS; ++i) h = (h ^ w[i]) * 0x100000001b3ull + (h >> 29);
  return h;
}

static void write_page(uint64_t i, uint64_t seq) {
  uint64_t* w = (uint64_t*)(pages + i * PAGE);
  uint64_t s = fg_mix64(i * 0x1000003ull + seq) | 1;
  for (uint32_t k = 3; k < WORDS; ++k) w[k] = fg_xorshift(&s);
  w[0] = MAGIC ^ i;
  w[1] = seq;
  w[2] = body_checksum(w);
  record[i] = seq;
}

/* Returns 1 if page i is intact; reports the first few failures on the console. */
static int check_page(uint64_t i, struct vcpu_result* r) {
  const uint64_t* w = (const uint64_t*)(pages + i * PAGE);
  const char* why = 0;
  if (w[0] != (MAGIC ^ i)) why = "header (wrong or missing page)";
  else if (w[1] != record[i]) why = w[1] < record[i] ? "stale page (older sequence)" : "sequence ahead of record";
  else if (w[2] != body_checksum(w)) why = "checksum (corrupted contents)";
  if (!why) return 1;
  if (r->errors < 8) {
    fg_printf("memcheck: ERROR page %lu at %p: %s (seq %lu, record %lu)\n", i, (const void*)w, why, w[1], record[i]);
  }
  r->errors++;
  return 0;
}

/* verify_seq in the report is the newest verify request that every vCPU has finished. */
static void report(uint32_t nvcpus, int full) {
  uint64_t errors = 0, writes = 0, sweeps = 0, vpages = 0, verrors = 0, max_pause = 0;
  uint64_t verified = results[0].verify_done;
  for (uint32_t v = 0; v < nvcpus; ++v) {
    if (results[v].verify_done < verified) verified = results[v].verify_done;
    errors += results[v].errors;
    writes += results[v].writes;
    sweeps += results[v].sweeps;
    vpages += results[v].verify_pages;
    verrors += results[v].verify_errors;
    if (results[v].max_pause_ns > max_pause) max_pause = results[v].max_pause_ns;
  }
  const char* verdict = errors == 0 ? "ok" : "fail";
  if (full) {
    fg_printf("memcheck: verify %s: %lu pages checked, %lu errors (verify_seq=%lu, max_pause_us=%lu)\n",
              verrors == 0 ? "ok" : "FAILED", vpages, verrors, verified, max_pause / 1000);
  }
  fg_report("workload=memcheck verdict=%s errors=%lu pages=%lu writes=%lu sweeps=%lu verify_seq=%lu "
            "verify_pages=%lu verify_errors=%lu max_pause_us=%lu vcpus=%u data_gpa=%lu record_gpa=%lu",
            verdict, errors, npages, writes, sweeps, verified, vpages, verrors, max_pause / 1000, nvcpus,
            (uint64_t)pages, (uint64_t)record);
}

static void setup(void) {
  const struct ferry_boot_info* b = fg_boot();
  uint64_t free_bytes = b->free_end - b->free_start;
  uint64_t want = fg_arg_u64("mib", 0) << 20;
  uint64_t n = free_bytes / (PAGE + 8);
  if (want && want / PAGE < n) n = want / PAGE;
  uint64_t record_bytes = (n * 8 + PAGE - 1) & ~(uint64_t)(PAGE - 1);
  record = (uint64_t*)b->free_start;
  pages = (uint8_t*)(b->free_start + record_bytes);
  npages = n;
}

int guest_main(uint32_t vcpu, uint32_t nvcpus) {
  if (vcpu == 0) {
    setup();
    fg_printf("memcheck: %lu pages (%lu MiB) on %u vCPUs\n", npages, npages * PAGE >> 20, nvcpus);
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
  }
  while (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) __builtin_ia32_pause();

  struct vcpu_result* r = &results[vcpu];
  const uint64_t batch = fg_arg_u64("batch", 32);
  uint64_t rng = fg_mix64(vcpu + 1) | 1;
  for (uint64_t i = vcpu; i < npages; i += nvcpus) write_page(i, 1);
  fg_barrier();
  if (vcpu == 0) {
    fg_printf("memcheck: initial fill done at t=%lu ms\n", fg_now_ns() / 1000000);
    report(nvcpus, 0);
  }

  const uint64_t mine = (npages - vcpu + nvcpus - 1) / nvcpus;
  uint64_t sweep_cursor = 0, last = fg_now_ns(), last_report = last;
  uint64_t stop_seen = fg_stop_seq();
  for (;;) {
    uint64_t now = fg_now_ns();
    if (now - last > r->max_pause_ns) r->max_pause_ns = now - last;
    last = now;
    if (fg_stop_seq() != stop_seen) break;

    uint64_t vseq = fg_verify_seq();
    if (vseq != r->verify_done) {
      uint64_t before = r->errors, checked = 0;
      for (uint64_t i = vcpu; i < npages; i += nvcpus, ++checked) check_page(i, r);
      r->verify_pages = checked;
      r->verify_errors = r->errors - before;
      __atomic_store_n(&r->verify_done, vseq, __ATOMIC_RELEASE);
      if (vcpu == 0) {
        for (uint32_t v = 1; v < nvcpus; ++v) {
          while (__atomic_load_n(&results[v].verify_done, __ATOMIC_ACQUIRE) < vseq) fg_wait(1000000);
        }
        report(nvcpus, 1);
      }
      last = fg_now_ns(); /* a requested full pass is work, not a pause */
      continue;
    }
    for (uint64_t k = 0; k < batch && mine; ++k) {
      uint64_t i = vcpu + (fg_xorshift(&rng) % mine) * nvcpus;
      check_page(i, r);
      write_page(i, record[i] + 1);
      r->writes++;
    }
    for (uint64_t k = 0; k < batch && mine; ++k) {
      check_page(vcpu + sweep_cursor * nvcpus, r);
      if (++sweep_cursor == mine) {
        sweep_cursor = 0;
        r->sweeps++;
      }
    }
    if (vcpu == 0 && now - last_report > 500000000ull) {
      report(nvcpus, 0);
      last_report = now;
    }
  }
  if (vcpu == 0) {
    report(nvcpus, 0);
    fg_printf("memcheck: stopping, %s\n", results[0].errors ? "errors seen" : "no errors");
  }
  return 0;
}
