#include "ethernet.h"

#include <algorithm>

namespace ferry::hypervisor {
namespace {

constexpr size_t kEthHeader = 14;
constexpr uint16_t kTypeIpv4 = 0x0800, kTypeArp = 0x0806;

uint16_t Be16(std::span<const uint8_t> f, size_t at) { return static_cast<uint16_t>(f[at] << 8 | f[at + 1]); }
uint32_t Be32(std::span<const uint8_t> f, size_t at) {
  return uint32_t{f[at]} << 24 | uint32_t{f[at + 1]} << 16 | uint32_t{f[at + 2]} << 8 | f[at + 3];
}
void PutBe16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}
void PutBe32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

}  // namespace

std::vector<uint8_t> GratuitousArp(const Mac& mac, uint32_t ip) {
  std::vector<uint8_t> f;
  f.reserve(60);
  f.insert(f.end(), 6, 0xff);               // broadcast
  f.insert(f.end(), mac.begin(), mac.end());
  PutBe16(f, kTypeArp);
  PutBe16(f, 1);                             // hardware: Ethernet
  PutBe16(f, kTypeIpv4);
  f.push_back(6);
  f.push_back(4);
  PutBe16(f, 1);                             // request
  f.insert(f.end(), mac.begin(), mac.end());
  PutBe32(f, ip);
  f.insert(f.end(), 6, 0x00);
  PutBe32(f, ip);
  f.resize(60, 0);                           // minimum frame size, padded
  return f;
}

std::optional<Mac> SourceMac(std::span<const uint8_t> frame) {
  if (frame.size() < kEthHeader) return std::nullopt;
  Mac m;
  std::copy_n(frame.begin() + 6, 6, m.begin());
  return m;
}

std::optional<uint32_t> SenderIpv4(std::span<const uint8_t> frame, const Mac& mac) {
  auto src = SourceMac(frame);
  if (!src || *src != mac) return std::nullopt;
  const uint16_t type = Be16(frame, 12);
  if (type == kTypeArp) {
    if (frame.size() < kEthHeader + 28) return std::nullopt;
    if (Be16(frame, 14) != 1 || Be16(frame, 16) != kTypeIpv4 || frame[18] != 6 || frame[19] != 4) return std::nullopt;
    if (!std::equal(mac.begin(), mac.end(), frame.begin() + 22)) return std::nullopt;
    uint32_t ip = Be32(frame, 28);
    return ip ? std::optional(ip) : std::nullopt;
  }
  if (type == kTypeIpv4) {
    if (frame.size() < kEthHeader + 20 || (frame[14] >> 4) != 4) return std::nullopt;
    uint32_t ip = Be32(frame, 26);
    return ip ? std::optional(ip) : std::nullopt;
  }
  return std::nullopt;
}

}  // namespace ferry::hypervisor
