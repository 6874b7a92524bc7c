#include "output_buffer.h"

namespace ferry::hypervisor {

bool OutputBuffer::Add(std::span<const uint8_t> frame) {
  if (charged_ + Charge(frame.size()) > cap_bytes_) {
    ++dropped_;
    return false;
  }
  frames_.push_back(Held{sealed_ + 1, std::vector<uint8_t>(frame.begin(), frame.end())});
  bytes_ += frame.size();
  charged_ += Charge(frame.size());
  return true;
}

std::vector<std::vector<uint8_t>> OutputBuffer::TakeUpTo(uint64_t epoch) {
  std::vector<std::vector<uint8_t>> out;
  while (!frames_.empty() && frames_.front().epoch <= epoch) {
    bytes_ -= frames_.front().frame.size();
    charged_ -= Charge(frames_.front().frame.size());
    out.push_back(std::move(frames_.front().frame));
    frames_.pop_front();
  }
  return out;
}

std::vector<std::vector<uint8_t>> OutputBuffer::TakeAll() { return TakeUpTo(UINT64_MAX); }

}  // namespace ferry::hypervisor
