// Checksums for Ferry's formats: XXH3-64 (libxxhash), one-shot and streaming.
// Stateless functions are thread-safe; a Checksummer is owned by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace ferry {

uint64_t Checksum64(const void* data, size_t len);
inline uint64_t Checksum64(std::span<const uint8_t> s) { return Checksum64(s.data(), s.size()); }
// XXH3-64 with a seed: binds a payload to the header that carries it (wire frames).
uint64_t Checksum64Seeded(const void* data, size_t len, uint64_t seed);

class Checksummer {
 public:
  Checksummer();
  ~Checksummer();
  Checksummer(const Checksummer&) = delete;
  Checksummer& operator=(const Checksummer&) = delete;
  void Update(const void* data, size_t len);
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ferry
