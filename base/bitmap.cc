#include "ferry/base/bitmap.h"

#include <algorithm>
#include <bit>

namespace ferry {

void Bitmap::SetRange(uint64_t first, uint64_t count) {
  uint64_t end = std::min(bits_, first + count);
  if (first >= end) return;
  while (first < end && first % 64) Set(first++);
  for (; first + 64 <= end; first += 64) words_[first / 64] = ~0ull;
  while (first < end) Set(first++);
}

void Bitmap::ClearAll() { std::fill(words_.begin(), words_.end(), 0); }

void Bitmap::MergeFrom(const Bitmap& other) {
  size_t n = std::min(words_.size(), other.words_.size());
  for (size_t i = 0; i < n; ++i) words_[i] |= other.words_[i];
}

uint64_t Bitmap::Count() const {
  uint64_t n = 0;
  for (uint64_t w : words_) n += std::popcount(w);
  return n;
}

bool Bitmap::Any() const {
  return std::any_of(words_.begin(), words_.end(), [](uint64_t w) { return w != 0; });
}

void Bitmap::TakeAtomic(Bitmap* out) {
  size_t n = std::min(words_.size(), out->words_.size());
  for (size_t i = 0; i < n; ++i) {
    if (std::atomic_ref<uint64_t>(words_[i]).load(std::memory_order_relaxed) == 0) continue;
    out->words_[i] |= std::atomic_ref<uint64_t>(words_[i]).exchange(0, std::memory_order_acq_rel);
  }
}

}  // namespace ferry
