// Bitmap: one bit per page, in 64-bit words laid out like KVM's dirty bitmaps (bit i of word
// w is page w*64+i). Set/Test/Clear are plain; SetAtomic and TakeAtomic are safe against
// concurrent SetAtomic callers (device writes from several threads racing a harvest).
// Otherwise thread-compatible.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace ferry {

class Bitmap {
 public:
  Bitmap() = default;
  explicit Bitmap(uint64_t bits) : bits_(bits), words_((bits + 63) / 64, 0) {}

  uint64_t size() const { return bits_; }
  uint64_t word_count() const { return words_.size(); }
  uint64_t* words() { return words_.data(); }
  const uint64_t* words() const { return words_.data(); }

  void Set(uint64_t i) { words_[i / 64] |= 1ull << (i % 64); }
  void Clear(uint64_t i) { words_[i / 64] &= ~(1ull << (i % 64)); }
  bool Test(uint64_t i) const { return (words_[i / 64] >> (i % 64)) & 1; }
  // Sets bits [first, first+count), clamped to size().
  void SetRange(uint64_t first, uint64_t count);
  void SetAll() { SetRange(0, bits_); }
  void ClearAll();
  // this |= other (same size).
  void MergeFrom(const Bitmap& other);
  uint64_t Count() const;
  bool Any() const;

  // Lock-free set for concurrent writers.
  void SetAtomic(uint64_t i) {
    std::atomic_ref<uint64_t>(words_[i / 64]).fetch_or(1ull << (i % 64), std::memory_order_relaxed);
  }
  // Moves every set bit into `out` (OR), clearing them here, word by word with an atomic
  // exchange so no concurrent SetAtomic is lost.
  void TakeAtomic(Bitmap* out);

 private:
  uint64_t bits_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace ferry
