// Parsing and printing of sizes ("256M", "1G", "4096") for CLI flags and configs.
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/base/status.h"

namespace ferry {

// Accepts a decimal number with an optional binary suffix K, M, G, T (also KiB/MiB/GiB/TiB,
// case-insensitive). "256M" = 256 MiB. Refuses empty strings, junk, and overflow.
Result<uint64_t> ParseSize(std::string_view text);
// A whole decimal number and nothing else (no sign, no spaces, no overflow); false otherwise.
// For what a guest or a peer reports: never throws, unlike std::stoull.
bool ParseU64(std::string_view text, uint64_t* out);
// "256 MiB", "1.5 GiB", "4096 B".
std::string FormatSize(uint64_t bytes);

}  // namespace ferry
