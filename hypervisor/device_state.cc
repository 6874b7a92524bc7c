#include "ferry/hypervisor/device_state.h"

#include <cstdio>

#include "ferry/hypervisor/guest_abi.h"

namespace ferry::hypervisor {

namespace {
constexpr size_t kMaxPartialLine = 64 * 1024;
}

void EncodeConsoleState(const ConsoleState& s, Encoder& e) {
  e.PutU64(s.bytes_written);
  e.PutU64(s.lines_written);
  e.PutString(s.partial_line);
}

Status DecodeConsoleState(Decoder& d, ConsoleState* s) {
  d.GetU64(&s->bytes_written);
  d.GetU64(&s->lines_written);
  d.GetString(&s->partial_line, kMaxPartialLine);
  return d.ok() ? Status::Ok() : Corrupt("console state is truncated or oversized");
}

void EncodeClockState(const ClockState& s, Encoder& e) {
  e.PutU64(s.guest_ns);
  e.PutU64(s.host_realtime_ns);
}

Status DecodeClockState(Decoder& d, ClockState* s) {
  d.GetU64(&s->guest_ns);
  d.GetU64(&s->host_realtime_ns);
  return d.ok() ? Status::Ok() : Corrupt("clock state is truncated");
}

namespace {

void EncodeQueue(const QueueState& q, Encoder& e) {
  e.PutU64(q.ring_gpa);
  e.PutU32(q.entries);
  e.PutU32(q.next);
  e.PutU8(q.broken ? 1 : 0);
}

// Placement is validated again by the device when it attaches the ring; here only shape.
bool DecodeQueue(Decoder& d, QueueState* q) {
  uint8_t broken = 0;
  d.GetU64(&q->ring_gpa);
  d.GetU32(&q->entries);
  d.GetU32(&q->next);
  d.GetU8(&broken);
  q->broken = broken != 0;
  if (!d.ok() || broken > 1 || q->entries > FERRY_RING_MAX_ENTRIES) return false;
  return q->ring_gpa == 0 ? q->entries == 0 : (q->entries != 0 && (q->entries & (q->entries - 1)) == 0);
}

}  // namespace

void EncodeBlockState(const BlockState& s, Encoder& e) {
  e.PutU8(s.present ? 1 : 0);
  e.PutU64(s.sectors);
  EncodeQueue(s.queue, e);
}

Status DecodeBlockState(Decoder& d, BlockState* s) {
  uint8_t present = 0;
  d.GetU8(&present);
  d.GetU64(&s->sectors);
  s->present = present != 0;
  if (!d.ok() || present > 1 || !DecodeQueue(d, &s->queue)) return Corrupt("block device state is malformed");
  return Status::Ok();
}

void EncodeNetState(const NetState& s, Encoder& e) {
  e.PutU8(s.present ? 1 : 0);
  e.PutBytes(s.mac);
  e.PutU32(s.guest_ip);
  EncodeQueue(s.rx, e);
  EncodeQueue(s.tx, e);
}

Status DecodeNetState(Decoder& d, NetState* s) {
  uint8_t present = 0;
  std::span<const uint8_t> mac;
  d.GetU8(&present);
  d.GetBytes(6, &mac);
  d.GetU32(&s->guest_ip);
  if (!d.ok() || present > 1 || !DecodeQueue(d, &s->rx) || !DecodeQueue(d, &s->tx)) {
    return Corrupt("network device state is malformed");
  }
  s->present = present != 0;
  std::copy(mac.begin(), mac.end(), s->mac.begin());
  return Status::Ok();
}

std::string FormatMac(const std::array<uint8_t, 6>& mac) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
  return buf;
}

Result<std::array<uint8_t, 6>> ParseMac(const std::string& text) {
  std::array<uint8_t, 6> mac{};
  unsigned v[6];
  char extra;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &extra) != 6) {
    return InvalidArgument("'" + text + "' is not a MAC address (expected xx:xx:xx:xx:xx:xx)");
  }
  for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(v[i]);
  if (mac[0] & 1) return InvalidArgument("MAC " + text + " is a multicast address");
  if (mac == std::array<uint8_t, 6>{}) return InvalidArgument("MAC 00:00:00:00:00:00 is not usable");
  return mac;
}

std::string FormatIpv4(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." + std::to_string((ip >> 8) & 255) +
         "." + std::to_string(ip & 255);
}

}  // namespace ferry::hypervisor
