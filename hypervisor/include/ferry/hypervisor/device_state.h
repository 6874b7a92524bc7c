// Saved state of the VMM-side devices, each a plain struct beside its live device
// (Firecracker's pattern), with a field-by-field encoding for snapshots and migration.
// Value types: thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

// Which host resources back the PV devices. Host-specific: a restore or an incoming
// migration may name others (same size disk, any TAP). Carried in snapshots and streams so a
// restore on the same host needs no flags.
struct DeviceConfig {
  std::string disk_path;            // raw image; empty: no disk
  std::string tap;                  // TAP interface; empty: no NIC
  std::string bridge;               // if set, the TAP is enslaved to this bridge and brought up
  std::array<uint8_t, 6> mac{};     // the guest's MAC (all zero: generate one at boot)
};

// Host resources given on another host (restore --disk/--net, incoming --disk/--net) replace
// the saved ones; the MAC never changes: it is the guest's identity.
struct DeviceOverrides {
  std::optional<std::string> disk_path, tap, bridge;
  void ApplyTo(DeviceConfig* c) const {
    if (disk_path) c->disk_path = *disk_path;
    if (tap) c->tap = *tap;
    if (bridge) c->bridge = *bridge;
  }
};

// One descriptor ring as the device sees it (guest_abi.h): where it is, and the device's own
// position (`next` = descriptors completed, mirrored in the ring's `used`).
struct QueueState {
  uint64_t ring_gpa = 0;  // 0: not set up
  uint32_t entries = 0;
  uint32_t next = 0;
  bool broken = false;
};

struct BlockState {
  bool present = false;
  uint64_t sectors = 0;   // the image's size at save; a restore refuses an image of another size
  QueueState queue;
};

struct NetState {
  bool present = false;
  std::array<uint8_t, 6> mac{};
  uint32_t guest_ip = 0;  // learned from the guest's own frames (host order); 0: not yet
  QueueState rx, tx;
};

// Counters since this VMM process started the device (not saved: they describe this host).
struct BlockStats {
  uint64_t reads = 0, writes = 0, flushes = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t bad_requests = 0, io_errors = 0;
  uint64_t overlay_writes = 0;  // writes held in the write-back overlay (post-copy)
  uint64_t overlay_waits = 0;   // writes that waited for the overlay's commit or discard (cap)
  uint64_t overlay_bytes = 0;   // held right now
};

struct NetStats {
  uint64_t rx_frames = 0, rx_bytes = 0, rx_bad_buffers = 0;
  uint64_t tx_frames = 0, tx_bytes = 0, tx_dropped = 0, tx_bad = 0, tx_spoofed = 0;
  uint64_t announcements = 0;
  uint64_t tx_buffered = 0;  // frames that waited for a checkpoint (output commit)
  uint64_t tx_held = 0;      // frames waiting right now
  uint64_t tx_discarded = 0; // frames dropped unsent because the output was discarded (post-copy)
};

// A completed guest write, as the disk journal records it for a replication checkpoint.
struct DiskWrite {
  uint64_t offset = 0;  // bytes, a multiple of 512
  std::vector<uint8_t> data;
};

void EncodeConsoleState(const ConsoleState& s, Encoder& e);
Status DecodeConsoleState(Decoder& d, ConsoleState* s);
void EncodeClockState(const ClockState& s, Encoder& e);
Status DecodeClockState(Decoder& d, ClockState* s);
void EncodeBlockState(const BlockState& s, Encoder& e);
Status DecodeBlockState(Decoder& d, BlockState* s);
void EncodeNetState(const NetState& s, Encoder& e);
Status DecodeNetState(Decoder& d, NetState* s);
std::string FormatMac(const std::array<uint8_t, 6>& mac);
Result<std::array<uint8_t, 6>> ParseMac(const std::string& text);
std::string FormatIpv4(uint32_t ip);

}  // namespace ferry::hypervisor
