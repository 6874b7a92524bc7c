#include "ferry/dirtylog/page_ranges.h"

#include <bit>

namespace ferry::dirtylog {

void ForEachRange(const Bitmap& bits, const std::function<void(PageRange)>& fn) {
  PageRange run;
  bool open = false;
  auto close = [&] {
    if (open) fn(run);
    open = false;
  };
  const uint64_t* w = bits.words();
  for (uint64_t i = 0; i < bits.word_count(); ++i) {
    const uint64_t word = w[i];
    if (word == 0) {  // clean words (the common case) cost one compare
      close();
      continue;
    }
    uint64_t bit = 0;
    while (bit < 64) {
      uint64_t rest = word >> bit;
      if (rest == 0) {
        close();
        break;
      }
      uint64_t zeros = std::countr_zero(rest);
      if (zeros) {  // a gap ends the open run
        close();
        bit += zeros;
        rest >>= zeros;
      }
      uint64_t ones = std::countr_one(rest);
      uint64_t page = i * 64 + bit;
      if (open && run.first + run.count == page) {
        run.count += ones;  // continues across the word boundary
      } else {
        close();
        run = {page, ones};
        open = true;
      }
      bit += ones;
    }
  }
  close();
}

std::vector<PageRange> Coalesce(const Bitmap& bits) {
  std::vector<PageRange> out;
  ForEachRange(bits, [&](PageRange r) { out.push_back(r); });
  return out;
}

}  // namespace ferry::dirtylog
