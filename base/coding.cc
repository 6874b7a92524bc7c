#include "ferry/base/coding.h"

namespace ferry {

void Encoder::PatchU32(size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) buf_[offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

void Encoder::PatchU64(size_t offset, uint64_t v) {
  for (int i = 0; i < 8; ++i) buf_[offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

bool Decoder::GetLe(int n, uint64_t* v) {
  if (!ok_ || in_.size() - pos_ < static_cast<size_t>(n)) {
    ok_ = false;
    return false;
  }
  uint64_t r = 0;
  for (int i = n - 1; i >= 0; --i) r = (r << 8) | in_[pos_ + i];
  pos_ += n;
  *v = r;
  return true;
}

bool Decoder::GetU8(uint8_t* v) {
  uint64_t r;
  if (!GetLe(1, &r)) return false;
  *v = static_cast<uint8_t>(r);
  return true;
}
bool Decoder::GetU16(uint16_t* v) {
  uint64_t r;
  if (!GetLe(2, &r)) return false;
  *v = static_cast<uint16_t>(r);
  return true;
}
bool Decoder::GetU32(uint32_t* v) {
  uint64_t r;
  if (!GetLe(4, &r)) return false;
  *v = static_cast<uint32_t>(r);
  return true;
}
bool Decoder::GetU64(uint64_t* v) { return GetLe(8, v); }

bool Decoder::GetBytes(size_t n, std::span<const uint8_t>* out) {
  if (!ok_ || in_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  *out = in_.subspan(pos_, n);
  pos_ += n;
  return true;
}

bool Decoder::GetString(std::string* out, size_t max_len) {
  uint32_t len;
  if (!GetU32(&len)) return false;
  if (len > max_len) {
    ok_ = false;
    return false;
  }
  std::span<const uint8_t> bytes;
  if (!GetBytes(len, &bytes)) return false;
  out->assign(bytes.begin(), bytes.end());
  return true;
}

}  // namespace ferry
