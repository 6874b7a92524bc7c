/* qemu-dirtier: guest/workloads/dirtier.c's uniform pattern with one vCPU, for QEMU.
 *
 * The QEMU peer in the benchmarks must dirty memory exactly as Ferry's dirtier does, so the
 * two VMMs migrate the same load: same dirty_page(), same RNG seed and page choice, same
 * pacing (pages per second = rate_mbps * 256). What differs is only what QEMU lacks:
 * no paravirtual clock (time = rdtsc / tsc_khz, the host TSC, which the guest reads
 * unchanged here) and no wait hypercall (idle time is spent spinning on rdtsc, since hlt is
 * not allowed at CPL3: this vCPU always burns one host core).
 *
 * Arguments (QEMU's -append): rate_mbps=N (0 = idle), wss_mib=N (default: all free RAM
 * above the image), tsc_khz=N (required), prefill=1 (write the working set once before
 * dirtying; default 0, as Ferry's dirtier does not). Output to port 0xe9 (isa-debugcon):
 * "dirtying rate=N wss_mib=N" once the paced loop starts, then "pages=N ms=T" every second. */
#include "ferry_guest.h"

#define PAGE 4096u

struct mb_info { /* multiboot v1 information, the fields used here */
  uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr, syms[4];
  uint32_t mmap_length, mmap_addr;
};
struct mb_mmap {
  uint32_t size; /* of the rest of the entry */
  uint64_t addr, len;
  uint32_t type; /* 1 = RAM */
} __attribute__((packed));

extern char __bss_end[];
static char cmdline[512];

/* format.c's fg_printf writes through this; debugcon takes one byte per `out`. */
void fg_console_write(const char* s, size_t len) {
  for (size_t i = 0; i < len; ++i) __asm__ volatile("outb %0, $0xe9" : : "a"(s[i]));
}

static uint64_t arg_u64(const char* key, uint64_t fallback) {
  size_t klen = strlen(key);
  for (const char* p = cmdline; *p; ++p) {
    if ((p == cmdline || p[-1] == ' ') && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      uint64_t v = 0;
      for (p += klen + 1; *p >= '0' && *p <= '9'; ++p) v = v * 10 + (uint64_t)(*p - '0');
      return v;
    }
  }
  return fallback;
}

static uint64_t tsc_khz, tsc0;

static uint64_t now_ns(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  uint64_t d = (((uint64_t)hi << 32) | lo) - tsc0;
  return d / tsc_khz * 1000000 + d % tsc_khz * 1000000 / tsc_khz; /* no 128-bit division without libgcc */
}

/* Same as dirtier.c. */
static void dirty_page(uint8_t* base, uint64_t page, uint64_t* rng) {
  uint64_t* w = (uint64_t*)(base + page * PAGE);
  uint64_t s = fg_xorshift(rng) | 1;
  for (uint32_t k = 0; k < PAGE / 8; ++k) w[k] = fg_xorshift(&s);
}

void qemu_main(const struct mb_info* mbi) {
  if (mbi->flags & (1u << 2)) { /* QEMU passes "<kernel path> <-append text>" */
    const char* s = (const char*)(uintptr_t)mbi->cmdline;
    size_t n = strlen(s);
    if (n >= sizeof cmdline) n = sizeof cmdline - 1;
    memcpy(cmdline, s, n);
  }
  /* QEMU puts the info block and its strings right after the image; stay clear of them. */
  uint64_t free_start = (uint64_t)__bss_end, end = (uint64_t)(uintptr_t)mbi + sizeof *mbi;
  if (end > free_start) free_start = end;
  end = (uint64_t)mbi->cmdline + sizeof cmdline;
  if ((mbi->flags & (1u << 2)) && end > free_start) free_start = end;
  end = (uint64_t)mbi->mmap_addr + mbi->mmap_length;
  if ((mbi->flags & (1u << 6)) && end > free_start) free_start = end;
  free_start = (free_start + 0xfffff) & ~(uint64_t)0xfffff;
  /* Free RAM ends where the RAM region holding the image ends (e820 via multiboot), and
   * boot.S maps only the low 4 GiB. */
  uint64_t free_end = 0x100000 + (uint64_t)mbi->mem_upper * 1024;
  if (mbi->flags & (1u << 6)) {
    for (uint32_t off = 0; off < mbi->mmap_length;) {
      const struct mb_mmap* e = (const struct mb_mmap*)(uintptr_t)(mbi->mmap_addr + off);
      if (e->type == 1 && e->addr <= 0x100000 && e->addr + e->len > 0x100000) free_end = e->addr + e->len;
      off += e->size + 4;
    }
  }
  if (free_end > (4ull << 30)) free_end = 4ull << 30;

  tsc_khz = arg_u64("tsc_khz", 0);
  if (!tsc_khz) {
    fg_printf("qemu-dirtier: tsc_khz= missing, not dirtying\n");
    for (;;) __builtin_ia32_pause();
  }
  uint64_t rate_mbps = arg_u64("rate_mbps", 100);
  uint64_t wss = arg_u64("wss_mib", 0) << 20, free_bytes = free_end - free_start;
  if (!wss || wss > free_bytes) wss = free_bytes;
  uint64_t wss_pages = wss / PAGE;
  uint8_t* base = (uint8_t*)free_start;
  if (arg_u64("prefill", 0)) { /* its own RNG, so the paced loop's sequence stays dirtier's */
    uint64_t rng0 = 0x9e3779b97f4a7c15ull;
    for (uint64_t p = 0; p < wss_pages; ++p) dirty_page(base, p, &rng0);
  }

  /* From here on, dirtier.c's loop for vCPU 0 of 1 with pattern=uniform. */
  uint64_t rng = fg_mix64(1) | 1;
  uint64_t pps = rate_mbps * 256, pages = 0;
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  tsc0 = ((uint64_t)hi << 32) | lo;
  uint64_t start = now_ns(), last_report = start, prev = start, window_gap = 0;
  fg_printf("dirtying rate=%lu wss_mib=%lu free_mib=%lu base=0x%lx\n", rate_mbps, wss >> 20, free_bytes >> 20,
            (uint64_t)base);
  for (;;) {
    uint64_t now = now_ns();
    /* The longest gap between loop turns in this report's window: a migration's pause as the
     * guest sees it (dirtier.c reports the same as window_max_pause_us). */
    if (now - prev > window_gap) window_gap = now - prev;
    prev = now;
    if (now - last_report >= 1000000000ull) {
      fg_printf("pages=%lu ms=%lu max_gap_us=%lu\n", pages, (now - start) / 1000000, window_gap / 1000);
      last_report = now;
      window_gap = 0;
    }
    uint64_t due = (now - start) / 1000 * pps / 1000000;
    if (pages >= due) { /* dirtier's fg_wait(nap), as a spin */
      uint64_t until = now + (pps ? 200000 : 10000000);
      for (uint64_t t = now_ns(); t < until; t = now_ns()) {
        if (t - prev > window_gap) window_gap = t - prev;
        prev = t;
        __builtin_ia32_pause();
      }
      continue;
    }
    uint64_t todo = due - pages;
    if (todo > 256) todo = 256;
    for (uint64_t k = 0; k < todo; ++k) {
      uint64_t r = fg_xorshift(&rng);
      dirty_page(base, (r >> 8) % wss_pages, &rng);
    }
    pages += todo;
  }
}
