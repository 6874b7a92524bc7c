/* Start-up, hypercalls, clock, events and arguments for Ferry guests. */
#include "ferry_guest.h"

static struct ferry_boot_info* const kBoot = (struct ferry_boot_info*)FERRY_GPA_BOOT_INFO;
static volatile struct ferry_shared_page* const kShared = (volatile struct ferry_shared_page*)FERRY_GPA_SHARED;
static struct ferry_hcall_block* const kBlocks = (struct ferry_hcall_block*)FERRY_GPA_HCALL;

const struct ferry_boot_info* fg_boot(void) { return kBoot; }

/* Each vCPU's stack lies FERRY_STACK_BYTES apart below the top of RAM (boot_layout.cc), so
 * the stack pointer names the vCPU without any per-CPU register. */
uint32_t fg_vcpu_id(void) {
  uint64_t rsp;
  __asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
  return (uint32_t)((kBoot->mem_bytes - rsp) / FERRY_STACK_BYTES);
}

uint64_t fg_hypercall(uint32_t nr, uint64_t a0, uint64_t a1, uint64_t a2) {
  struct ferry_hcall_block* b = &kBlocks[fg_vcpu_id()];
  b->args[0] = a0;
  b->args[1] = a1;
  b->args[2] = a2;
  __asm__ volatile("outl %%eax, %%dx" : : "a"(nr), "d"((uint16_t)FERRY_PORT_HYPERCALL) : "memory");
  return b->ret;
}

static uint64_t hypercall(uint32_t nr, uint64_t a0, uint64_t a1) { return fg_hypercall(nr, a0, a1, 0); }

void fg_console_write(const char* s, size_t len) { hypercall(FERRY_HC_CONSOLE_WRITE, (uint64_t)s, len); }

void fg_shutdown(int code) {
  hypercall(FERRY_HC_SHUTDOWN, (uint64_t)(uint32_t)code, 0);
  for (;;) {
  }
}

void fg_panic(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = fg_vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  hypercall(FERRY_HC_PANIC, (uint64_t)buf, (uint64_t)n);
  for (;;) {
  }
}

void fg_report(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = fg_vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  hypercall(FERRY_HC_REPORT, (uint64_t)buf, (uint64_t)n);
}

uint64_t fg_now_ns(void) {
  uint32_t v;
  uint64_t base, ns, mul, tsc;
  do {
    v = kShared->clock_version;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    base = kShared->tsc_base;
    ns = kShared->ns_base;
    mul = kShared->tsc_mul;
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    tsc = ((uint64_t)hi << 32) | lo;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
  } while ((v & 1) || v != kShared->clock_version);
  uint64_t delta = tsc > base ? tsc - base : 0;
  return ns + (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

uint64_t fg_verify_seq(void) { return kShared->verify_seq; }
uint64_t fg_stop_seq(void) { return kShared->stop_seq; }

uint64_t fg_event_count(void) {
  uint64_t n = kShared->verify_seq + kShared->stop_seq + kShared->irq_seq;
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return n;
}

void fg_wait_events(uint64_t seen, uint64_t timeout_ns) { hypercall(FERRY_HC_WAIT, timeout_ns, seen); }

void fg_wait(uint64_t timeout_ns) { fg_wait_events(fg_event_count(), timeout_ns); }

const volatile struct ferry_shared_page* fg_shared(void) { return kShared; }

static const char* find_arg(const char* key) {
  size_t klen = strlen(key);
  const char* p = kBoot->args;
  while (*p) {
    while (*p == ' ') ++p;
    if (strncmp(p, key, klen) == 0 && p[klen] == '=') return p + klen + 1;
    while (*p && *p != ' ') ++p;
  }
  return 0;
}

int fg_arg_str(const char* key, char* buf, size_t size) {
  const char* v = find_arg(key);
  if (!v || size == 0) return 0;
  size_t i = 0;
  while (v[i] && v[i] != ' ' && i + 1 < size) {
    buf[i] = v[i];
    ++i;
  }
  buf[i] = 0;
  return 1;
}

uint64_t fg_arg_u64(const char* key, uint64_t fallback) {
  const char* v = find_arg(key);
  if (!v || *v < '0' || *v > '9') return fallback;
  uint64_t r = 0;
  while (*v >= '0' && *v <= '9') r = r * 10 + (uint64_t)(*v++ - '0');
  return r;
}

static volatile uint32_t barrier_count;
static volatile uint32_t barrier_generation;

void fg_barrier(void) {
  uint32_t n = kBoot->vcpus;
  uint32_t gen = __atomic_load_n(&barrier_generation, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == n) {
    __atomic_store_n(&barrier_count, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&barrier_generation, 1, __ATOMIC_RELEASE);
    return;
  }
  while (__atomic_load_n(&barrier_generation, __ATOMIC_ACQUIRE) == gen) __builtin_ia32_pause();
}

void fg_start(uint32_t vcpu, const struct ferry_boot_info* boot);
void fg_start(uint32_t vcpu, const struct ferry_boot_info* boot) {
  if (boot->magic != FERRY_BOOT_MAGIC || boot->version != FERRY_BOOT_VERSION) fg_panic("bad boot info");
  int code = guest_main(vcpu, boot->vcpus);
  if (vcpu == 0) fg_shutdown(code);
  for (;;) fg_wait(1000000000ull); /* secondary vCPUs idle once done */
}
