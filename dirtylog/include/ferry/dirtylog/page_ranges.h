// Coalesced page ranges: how a harvested dirty set is handed to senders (one range per run of
// consecutive dirty pages). Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "ferry/base/bitmap.h"

namespace ferry::dirtylog {

struct PageRange {
  uint64_t first = 0;  // page number
  uint64_t count = 0;
  bool operator==(const PageRange&) const = default;
};

// Calls fn for each maximal run of set bits, in ascending order; skips clean words whole.
void ForEachRange(const Bitmap& bits, const std::function<void(PageRange)>& fn);
std::vector<PageRange> Coalesce(const Bitmap& bits);

}  // namespace ferry::dirtylog
