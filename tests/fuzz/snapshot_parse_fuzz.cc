// libFuzzer target for the snapshot parser: any byte string must be either accepted whole or
// refused with a Status — never a crash, an out-of-bounds read, or a chunk outside memory.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "snapshot_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry;
  using namespace ferry::hypervisor;
  VmState state;
  uint64_t mem = 0;
  snapshot::RamSink sink{[&](uint64_t bytes) {
                           mem = bytes;
                           return Status::Ok();
                         },
                         [&](uint64_t offset, std::span<const uint8_t> bytes) {
                           // The parser promises every chunk lies inside the announced memory.
                           if (offset > mem || bytes.size() > mem - offset) std::abort();
                           return Status::Ok();
                         }};
  snapshot::ParseStats stats;
  (void)snapshot::Parse(std::span<const uint8_t>(data, size), &state, sink, &stats);
  return 0;
}
