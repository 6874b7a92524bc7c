#include "ferry/hypervisor/device_state.h"

namespace ferry::hypervisor {

namespace {
constexpr size_t kMaxPartialLine = 64 * 1024;
}

void EncodeConsoleState(const ConsoleState& s, Encoder& e) {
  e.PutU64(s.bytes_written);
  e.PutU64(s.lines_written);
  e.PutString(s.partial_line);
}

Status DecodeConsoleState(Decoder& d, ConsoleState* s) {
  d.GetU64(&s->bytes_written);
  d.GetU64(&s->lines_written);
  d.GetString(&s->partial_line, kMaxPartialLine);
  return d.ok() ? Status::Ok() : Corrupt("console state is truncated or oversized");
}

void EncodeClockState(const ClockState& s, Encoder& e) {
  e.PutU64(s.guest_ns);
  e.PutU64(s.host_realtime_ns);
}

Status DecodeClockState(Decoder& d, ClockState* s) {
  d.GetU64(&s->guest_ns);
  d.GetU64(&s->host_realtime_ns);
  return d.ok() ? Status::Ok() : Corrupt("clock state is truncated");
}

}  // namespace ferry::hypervisor
