/* hello: the smallest guest. Prints a line, reports, and exits — or misbehaves on purpose
 * (mode=crash|panic|spin|exit) so tests can check how the VMM reports it. */
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
  if (strncmp(mode, "spin", 4) == 0) {
    uint64_t seen = fg_stop_seq();
    while (fg_stop_seq() == seen) fg_wait(100000000ull);
    fg_printf("hello: stop requested\n");
  }
  return (int)fg_arg_u64("code", 0);
}
