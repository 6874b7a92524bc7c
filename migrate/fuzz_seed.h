// For unit tests: keeps a valid message as a seed for tests/fuzz/migrate_decode_fuzz.cc when
// scripts/fuzz asks (FERRY_FUZZ_SEED_DIR), in that target's input format: type byte, aux
// byte, payload. Does nothing otherwise.
#pragma once

#include <cstdlib>
#include <fstream>
#include <span>
#include <string>

#include "ferry/migrate/protocol.h"

namespace ferry::migrate {

inline void MaybeWriteSeed(const std::string& name, MsgType type, uint8_t aux, std::span<const uint8_t> payload) {
  const char* dir = std::getenv("FERRY_FUZZ_SEED_DIR");
  if (!dir) return;
  std::ofstream out(std::string(dir) + "/migrate-" + name, std::ios::binary);
  const char prefix[2] = {static_cast<char>(type), static_cast<char>(aux)};
  out.write(prefix, 2);
  out.write(reinterpret_cast<const char*>(payload.data()), static_cast<std::streamsize>(payload.size()));
}

}  // namespace ferry::migrate
