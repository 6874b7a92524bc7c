// OutputBuffer: output commit's holding pen (replication). Frames the guest transmits during
// epoch N wait here until the standby has acknowledged checkpoint N; only then may they leave
// the host, so no client ever sees output from a state that a failover could lose.
//
// Seal() closes the current epoch (at a checkpoint's pause) and returns its number; TakeUpTo()
// hands out, in transmit order, every frame of the sealed epochs up to one. Bounded: frames
// beyond the byte cap are dropped (counted), as a congested link would drop them.
// Not thread-safe: NetDevice guards it with its lock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace ferry::hypervisor {

class OutputBuffer {
 public:
  explicit OutputBuffer(uint64_t cap_bytes) : cap_bytes_(cap_bytes) {}

  // Holds a frame of the current (open) epoch; false if it was dropped for the cap.
  bool Add(std::span<const uint8_t> frame);
  // Closes the open epoch; its frames (and later ones) belong to the returned epoch number.
  uint64_t Seal() { return ++sealed_; }
  // Every held frame of epochs <= `epoch`, oldest first.
  std::vector<std::vector<uint8_t>> TakeUpTo(uint64_t epoch);
  // Every held frame, sealed or not (replication ends: the output is released).
  std::vector<std::vector<uint8_t>> TakeAll();

  uint64_t sealed() const { return sealed_; }
  uint64_t held_frames() const { return frames_.size(); }
  uint64_t held_bytes() const { return bytes_; }
  uint64_t dropped() const { return dropped_; }

 private:
  struct Held {
    uint64_t epoch;  // the epoch that produced it: sealed_ + 1 when added
    std::vector<uint8_t> frame;
  };
  // What a held frame costs against the cap: at least a minimum frame's bytes, plus its
  // bookkeeping and allocation. Counting payload alone let a guest sending 14-byte frames hold
  // several times the cap in memory.
  static uint64_t Charge(size_t frame_bytes) { return std::max<uint64_t>(frame_bytes, 64) + sizeof(Held) + 16; }
  const uint64_t cap_bytes_;
  std::deque<Held> frames_;
  uint64_t bytes_ = 0;    // payload bytes held
  uint64_t charged_ = 0;  // against cap_bytes_
  uint64_t sealed_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace ferry::hypervisor
