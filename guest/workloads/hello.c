/* hello: the smallest guest. Prints a line, reports, and exits — or misbehaves on purpose
 * (mode=crash|panic|spin|exit|hostile) so tests can check how the VMM reports it. hostile:
 * reports that claim a verification with non-numeric and oversized fields and bytes that are
 * not UTF-8, on the console too, then waits for a stop like spin. */
#include "ferry_guest.h"

int guest_main(uint32_t vcpu, uint32_t nvcpus) {
  char mode[16] = "exit";
  fg_arg_str("mode", mode, sizeof mode);
  if (vcpu != 0) return 0;
  fg_printf("hello from a Ferry guest: %u vCPUs, %lu MiB, t=%lu us\n", nvcpus,
            fg_boot()->mem_bytes >> 20, fg_now_ns() / 1000);
  fg_report("guest=hello vcpus=%u mode=%s", nvcpus, mode);
  if (strncmp(mode, "crash", 5) == 0) *(volatile uint64_t*)0 = 1; /* unmapped page 0 */
  if (strncmp(mode, "panic", 5) == 0) fg_panic("asked to panic");
  if (strncmp(mode, "hostile", 7) == 0) {
    fg_printf("hostile console: \xff\xfe\xc3\x28 not utf-8\n");
    fg_report("verify_seq=abc verify_pages=1 verdict=ok verify_errors=0 junk=\xff\xfe");
  }
  if (strncmp(mode, "spin", 4) == 0 || strncmp(mode, "hostile", 7) == 0) {
    uint64_t round = 0;
    uint64_t seen = fg_stop_seq();
    while (fg_stop_seq() == seen) {
      fg_wait(100000000ull);
      /* A hostile guest keeps rewriting its report: numbers too large, fields out of order. */
      if (mode[0] == 'h') {
        fg_report("verify_seq=%lu%lu%lu verify_pages=-1 verdict=ok verify_errors=x guest=hello", ++round,
                  (uint64_t)-1, (uint64_t)-1);
      }
    }
    fg_printf("hello: stop requested\n");
  }
  return (int)fg_arg_u64("code", 0);
}
