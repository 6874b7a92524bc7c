/* The Ferry guest SDK: what a guest workload links against (freestanding C, CPL3).
 *
 * Every vCPU enters guest_main(vcpu, nvcpus) on its own stack; when vCPU 0 returns from it
 * the guest shuts down with that code. Functions here are safe to call from any vCPU; the
 * console and report hypercalls are serialized by the VMM. No interrupts, no exceptions: a
 * bad access is a triple fault that the VMM reports as a crash. */
#ifndef FERRY_GUEST_H_
#define FERRY_GUEST_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/hypervisor/guest_abi.h"

/* Defined by the workload. */
int guest_main(uint32_t vcpu, uint32_t nvcpus);

const struct ferry_boot_info* fg_boot(void);
uint32_t fg_vcpu_id(void);

/* Console and status. */
void fg_console_write(const char* s, size_t len);
int fg_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int fg_snprintf(char* buf, size_t size, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int fg_vsnprintf(char* buf, size_t size, const char* fmt, va_list ap);
/* A "key=value key=value" status line for the VMM's status API. */
void fg_report(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fg_shutdown(int code) __attribute__((noreturn));
void fg_panic(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Time, from the VMM's paravirtual clock page (no exit). */
uint64_t fg_now_ns(void);
/* Blocks up to timeout_ns or until the VMM raises an event; may return early. */
void fg_wait(uint64_t timeout_ns);
/* Sleeps until the event sum differs from `seen` (from fg_event_count(), read before the
 * caller looked at its rings, so no completion is missed) or timeout_ns passes. */
uint64_t fg_event_count(void);
void fg_wait_events(uint64_t seen, uint64_t timeout_ns);
/* The VMM's shared page: clock, event counters, device presence (guest_abi.h). */
const volatile struct ferry_shared_page* fg_shared(void);
/* A raw hypercall (guest_abi.h); returns the block's ret. */
uint64_t fg_hypercall(uint32_t nr, uint64_t a0, uint64_t a1, uint64_t a2);

/* Event counters in the shared page, bumped by the VMM. */
uint64_t fg_verify_seq(void);
uint64_t fg_stop_seq(void);

/* Arguments: "key=value" words given after `--` on the ferry command line. */
uint64_t fg_arg_u64(const char* key, uint64_t fallback);
/* Copies the value into buf (NUL-terminated); returns 1 if the key was present. */
int fg_arg_str(const char* key, char* buf, size_t size);

/* Deterministic non-compressible data. */
static inline uint64_t fg_mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
static inline uint64_t fg_xorshift(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}

/* A spin barrier over all vCPUs (generation-counting). */
void fg_barrier(void);

/* libc pieces the compiler may call. */
void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
int strncmp(const char* a, const char* b, size_t n);

#endif /* FERRY_GUEST_H_ */
