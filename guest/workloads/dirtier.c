/* dirtier: dirties guest memory at a configured rate, for benchmarks.
 *
 * Arguments: rate_mbps=N (total across vCPUs; 0 = idle, max = as fast as possible),
 * wss_mib=N (working set, default: all free memory), pattern=uniform|hotcold|sequential
 * (hotcold sends 90% of writes to the first 10% of the working set; sequential has each vCPU
 * sweep its own pages, p % nvcpus == vcpu, in order), seconds=N (0 = run until stopped).
 * Each write fills a whole page with fresh pseudo-random words (not trivially compressible).
 * record=1 keeps the guest's own record of what it wrote: a u32 write counter per working-set
 * page, ahead of the data pages (report fields record_gpa, data_gpa, wss_pages), which the
 * dirty-tracking tests compare with what the host harvested.
 * burst_pct=N switches to bursts for harvest benchmarks: idle until the VMM raises an event
 * (`ferry verify`), then the vCPUs write exactly N% of the working-set pages once, evenly
 * spread, and vCPU 0 reports burst_seq=<event> when all are done.
 * Every vCPU dirties its share; vCPU 0 reports rate, pages and the longest pause it saw. */
#include "ferry_guest.h"

#define PAGE 4096u

struct vcpu_stats {
  volatile uint64_t pages;
  volatile uint64_t max_pause_ns;
  uint64_t window_pause_ns; /* longest since vCPU 0's last report (exchanged atomically) */
  uint64_t pad[5];
};
static struct vcpu_stats stats[FERRY_MAX_VCPUS];

static volatile uint64_t burst_done[FERRY_MAX_VCPUS];

static void dirty_page(uint8_t* base, uint64_t page, uint64_t* rng) {
  uint64_t* w = (uint64_t*)(base + page * PAGE);
  uint64_t s = fg_xorshift(rng) | 1;
  for (uint32_t k = 0; k < PAGE / 8; ++k) w[k] = fg_xorshift(&s);
}

int guest_main(uint32_t vcpu, uint32_t nvcpus) {
  const struct ferry_boot_info* b = fg_boot();
  char rate_text[24] = "100", pattern[16] = "uniform";
  fg_arg_str("rate_mbps", rate_text, sizeof rate_text);
  fg_arg_str("pattern", pattern, sizeof pattern);
  int unlimited = strncmp(rate_text, "max", 3) == 0;
  uint64_t rate_mbps = fg_arg_u64("rate_mbps", 100);
  int hotcold = strncmp(pattern, "hotcold", 7) == 0;
  int sequential = strncmp(pattern, "sequential", 10) == 0;
  const char* pattern_name = sequential ? "sequential" : hotcold ? "hotcold" : "uniform";
  uint64_t wss = fg_arg_u64("wss_mib", 0) << 20;
  const int record = fg_arg_u64("record", 0) != 0;
  uint64_t free_bytes = b->free_end - b->free_start;
  /* With a record, the counters (4 bytes per page) take the front of free memory. */
  uint64_t record_bytes = record ? ((free_bytes / (PAGE + 4)) * 4 + PAGE - 1) & ~(uint64_t)(PAGE - 1) : 0;
  if (!wss || wss > free_bytes - record_bytes) wss = free_bytes - record_bytes;
  uint64_t wss_pages = wss / PAGE, hot_pages = wss_pages / 10 ? wss_pages / 10 : 1;
  uint64_t seconds = fg_arg_u64("seconds", 0);
  volatile uint32_t* counts = (volatile uint32_t*)b->free_start;
  uint8_t* base = (uint8_t*)(b->free_start + record_bytes);
  /* Pages per second for this vCPU, in pages per 2^20 ns to keep integer math exact enough. */
  uint64_t pps = rate_mbps * 256 / nvcpus;
  if (vcpu == 0) {
    fg_printf("dirtier: rate=%s MB/s wss=%lu MiB pattern=%s vcpus=%u\n", unlimited ? "max" : rate_text,
              wss >> 20, pattern_name, nvcpus);
  }
  struct vcpu_stats* st = &stats[vcpu];
  const uint64_t burst_pct = fg_arg_u64("burst_pct", 1000);
  if (burst_pct <= 100) {
    uint64_t seq = 0, rng2 = vcpu + 1, stop = fg_stop_seq();
    if (vcpu == 0) fg_report("workload=dirtier burst_pct=%lu burst_seq=0 wss_pages=%lu", burst_pct, wss_pages);
    while (fg_stop_seq() == stop) {
      uint64_t want = fg_verify_seq();
      if (want == seq) {
        fg_wait(100000000);
        continue;
      }
      /* Page p is in the burst when floor(p*pct/100) steps: exactly pct% of pages, spread out. */
      for (uint64_t p = vcpu; p < wss_pages; p += nvcpus) {
        if ((p + 1) * burst_pct / 100 != p * burst_pct / 100) dirty_page(base, p, &rng2);
      }
      seq = want;
      __atomic_store_n(&burst_done[vcpu], seq, __ATOMIC_RELEASE);
      if (vcpu == 0) {
        for (uint32_t v = 1; v < nvcpus; ++v) {
          while (__atomic_load_n(&burst_done[v], __ATOMIC_ACQUIRE) < seq) __builtin_ia32_pause();
        }
        fg_report("workload=dirtier burst_pct=%lu burst_seq=%lu wss_pages=%lu", burst_pct, seq, wss_pages);
      }
    }
    return 0;
  }
  uint64_t rng = fg_mix64(vcpu * 7919 + 1) | 1;
  uint64_t cursor = vcpu; /* sequential: this vCPU's next page */
  uint64_t start = fg_now_ns(), last = start, last_report = start, report_pages = 0, reports = 0;
  uint64_t stop_seen = fg_stop_seq();
  while (fg_stop_seq() == stop_seen) {
    uint64_t now = fg_now_ns();
    if (now > last && now - last > st->max_pause_ns) st->max_pause_ns = now - last;
    if (now > last && now - last > __atomic_load_n(&st->window_pause_ns, __ATOMIC_RELAXED)) {
      __atomic_store_n(&st->window_pause_ns, now - last, __ATOMIC_RELAXED);
    }
    last = now;
    if (seconds && now - start >= seconds * 1000000000ull) break;
    if (vcpu == 0 && now - last_report >= (reports ? 1000000000ull : 100000000ull)) {
      uint64_t total = 0, max_pause = 0, window_pause = 0;
      for (uint32_t v = 0; v < nvcpus; ++v) {
        total += stats[v].pages;
        if (stats[v].max_pause_ns > max_pause) max_pause = stats[v].max_pause_ns;
        uint64_t w = __atomic_exchange_n(&stats[v].window_pause_ns, 0, __ATOMIC_RELAXED);
        if (w > window_pause) window_pause = w;
      }
      uint64_t mbps = (total - report_pages) * PAGE / ((now - last_report) / 1000 + 1); /* bytes/us = MB/s */
      fg_report("workload=dirtier rate_mbps=%s achieved_mbps=%lu pages=%lu elapsed_us=%lu wss_mib=%lu pattern=%s "
                "max_pause_us=%lu window_max_pause_us=%lu vcpus=%u wss_pages=%lu data_gpa=%lu record_gpa=%lu",
                unlimited ? "max" : rate_text, mbps, total, (now - start) / 1000, wss >> 20, pattern_name,
                max_pause / 1000, window_pause / 1000, nvcpus, wss_pages, (uint64_t)base, record ? (uint64_t)counts : 0);
      report_pages = total;
      last_report = now;
      ++reports;
    }
    uint64_t due = unlimited ? st->pages + 64 : (now - start) / 1000 * pps / 1000000;
    if (st->pages >= due) {
      /* A requested sleep is not a pause, but oversleeping is: from here on, count from the
       * moment the guest asked to be woken. */
      uint64_t nap = pps ? 200000 : 10000000; /* idle guests nap longer */
      fg_wait(nap);
      last = now + nap;
      continue;
    }
    uint64_t todo = due - st->pages;
    if (todo > 256) todo = 256;
    for (uint64_t k = 0; k < todo; ++k) {
      uint64_t r = fg_xorshift(&rng), page;
      if (sequential) {
        page = cursor;
        cursor = cursor + nvcpus < wss_pages ? cursor + nvcpus : vcpu;
      } else {
        page = (hotcold && (r & 0xff) < 230) ? (r >> 8) % hot_pages : (r >> 8) % wss_pages;
      }
      dirty_page(base, page, &rng);
      if (record) __atomic_add_fetch(&counts[page], 1, __ATOMIC_RELAXED);
    }
    st->pages += todo;
  }
  if (vcpu == 0) fg_printf("dirtier: stopped after %lu pages, max pause %lu us\n", st->pages, st->max_pause_ns / 1000);
  return 0;
}
