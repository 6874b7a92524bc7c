// Loads a static ELF64 x86-64 guest image into guest memory.
//
// The file is untrusted input: every header field, offset and size is validated before
// anything is copied, and segments must lie in [FERRY_GPA_IMAGE_MIN, memory size). Stateless
// and thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/guest_memory.h"

namespace ferry::hypervisor {

struct LoadedImage {
  uint64_t entry = 0;
  uint64_t image_end = 0;  // first byte above the highest loaded segment
};

// Parses and loads `elf` (the whole file) into `memory`.
Result<LoadedImage> LoadElf(std::span<const uint8_t> elf, GuestMemory& memory);
// Reads the file at `path` and loads it; errors name the path.
Result<LoadedImage> LoadElfFile(const std::string& path, GuestMemory& memory);

}  // namespace ferry::hypervisor
