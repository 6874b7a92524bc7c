// Saved state of the VMM-side devices, each a plain struct beside its live device
// (Firecracker's pattern), with a field-by-field encoding for snapshots and migration.
// Value types: thread-compatible.
#pragma once

#include <cstdint>
#include <string>

#include "ferry/base/coding.h"
#include "ferry/base/status.h"

namespace ferry::hypervisor {

// The console: bytes written so far and an unfinished line, so output continues seamlessly.
struct ConsoleState {
  uint64_t bytes_written = 0;
  uint64_t lines_written = 0;
  std::string partial_line;
};

// The paravirtual clock at the moment of saving: guest time, and the host's wall clock so a
// restore can advance guest time by the real time that passed (forward only, never back).
struct ClockState {
  uint64_t guest_ns = 0;
  uint64_t host_realtime_ns = 0;
};

void EncodeConsoleState(const ConsoleState& s, Encoder& e);
Status DecodeConsoleState(Decoder& d, ConsoleState* s);
void EncodeClockState(const ClockState& s, Encoder& e);
Status DecodeClockState(Decoder& d, ClockState* s);

}  // namespace ferry::hypervisor
