/* The network stack's frame codec: checksums, validation of received Ethernet/ARP/IPv4/UDP
 * frames, construction of the frames we send, and address text. Pure functions over byte
 * buffers; see net_internal.h. A received frame is untrusted input: every length is checked
 * against what the frame actually holds before anything is read. */
#include "ferry_guest.h"
#include "net_internal.h"

const uint8_t fg_mac_broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

uint64_t fg_csum_add(uint64_t sum, const uint8_t* p, size_t len) {
  for (; len >= 2; p += 2, len -= 2) sum += (uint32_t)p[0] << 8 | p[1];
  if (len) sum += (uint32_t)p[0] << 8;
  return sum;
}

uint16_t fg_csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/* The UDP checksum covers a pseudo-header (addresses, protocol, UDP length) and the datagram. */
static uint64_t udp_sum(const uint8_t* ip_addrs, const uint8_t* udp, uint16_t udp_len) {
  uint64_t sum = fg_csum_add(0, ip_addrs, 8) + FG_IPPROTO_UDP + udp_len;
  return fg_csum_add(sum, udp, udp_len);
}

static enum fg_rx_kind parse_arp(const uint8_t* a, uint32_t len, struct fg_rx_frame* out) {
  if (len < FG_ARP_LEN) return FG_RX_MALFORMED;
  /* Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses: the only ARP that exists here. */
  if (fg_get_be16(a) != 1 || fg_get_be16(a + 2) != FG_ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4) {
    return FG_RX_MALFORMED;
  }
  uint16_t op = fg_get_be16(a + 6);
  if (op != FG_ARP_REQUEST && op != FG_ARP_REPLY) return FG_RX_MALFORMED;
  if (a[8] & 1) return FG_RX_MALFORMED; /* a multicast sender could poison the cache */
  out->arp_op = op;
  out->src_mac = a + 8;
  out->src_ip = fg_get_be32(a + 14);
  out->arp_target_ip = fg_get_be32(a + 24);
  return FG_RX_ARP;
}

static enum fg_rx_kind parse_ipv4(const uint8_t* ip, uint32_t len, uint32_t our_ip, struct fg_rx_frame* out) {
  if (len < FG_IPV4_HLEN || ip[0] >> 4 != 4) return FG_RX_MALFORMED;
  uint32_t hlen = (uint32_t)(ip[0] & 0xf) * 4;
  uint32_t total = fg_get_be16(ip + 2); /* the frame may carry Ethernet padding beyond it */
  if (hlen < FG_IPV4_HLEN || total < hlen || total > len) return FG_RX_MALFORMED;
  if (fg_csum_fold(fg_csum_add(0, ip, hlen)) != 0) return FG_RX_MALFORMED;
  /* Reserved bit, more-fragments or an offset: we never reassemble. */
  if (fg_get_be16(ip + 6) & 0xbfff) return FG_RX_MALFORMED;
  uint32_t src = fg_get_be32(ip + 12), dst = fg_get_be32(ip + 16);
  if (dst != our_ip) return FG_RX_IGNORED;
  /* Unanswerable sources: unspecified, multicast, reserved, broadcast. */
  if (src == 0 || src >= 0xe0000000u) return FG_RX_MALFORMED;
  out->src_ip = src;
  if (ip[9] != FG_IPPROTO_UDP) return FG_RX_IGNORED;

  const uint8_t* udp = ip + hlen;
  uint32_t room = total - hlen;
  if (room < FG_UDP_HLEN) return FG_RX_MALFORMED;
  uint16_t udp_len = fg_get_be16(udp + 4);
  if (udp_len < FG_UDP_HLEN || udp_len > room) return FG_RX_MALFORMED;
  /* Zero means the sender computed no checksum; anything else must verify. */
  if (fg_get_be16(udp + 6) != 0 && fg_csum_fold(udp_sum(ip + 12, udp, udp_len)) != 0) return FG_RX_MALFORMED;
  out->src_port = fg_get_be16(udp);
  out->dst_port = fg_get_be16(udp + 2);
  out->payload = udp + FG_UDP_HLEN;
  out->payload_len = udp_len - FG_UDP_HLEN;
  return FG_RX_UDP;
}

enum fg_rx_kind fg_net_parse(const uint8_t* frame, uint32_t len, const uint8_t our_mac[6], uint32_t our_ip,
                             struct fg_rx_frame* out) {
  memset(out, 0, sizeof *out);
  if (len < FG_ETH_HLEN || len > FERRY_NET_MAX_FRAME) return FG_RX_MALFORMED;
  if (frame[6] & 1) return FG_RX_MALFORMED; /* a multicast source address is never valid */
  if (memcmp(frame, our_mac, 6) != 0 && memcmp(frame, fg_mac_broadcast, 6) != 0) return FG_RX_IGNORED;
  out->src_mac = frame + 6;
  uint16_t type = fg_get_be16(frame + 12);
  if (type == FG_ETHERTYPE_ARP) return parse_arp(frame + FG_ETH_HLEN, len - FG_ETH_HLEN, out);
  if (type == FG_ETHERTYPE_IPV4) return parse_ipv4(frame + FG_ETH_HLEN, len - FG_ETH_HLEN, our_ip, out);
  return FG_RX_IGNORED;
}

static uint32_t eth_header(uint8_t* buf, const uint8_t dst[6], const uint8_t src[6], uint16_t type) {
  memcpy(buf, dst, 6);
  memcpy(buf + 6, src, 6);
  fg_put_be16(buf + 12, type);
  return FG_ETH_HLEN;
}

static uint32_t pad(uint8_t* buf, uint32_t len) {
  if (len >= FG_ETH_MIN_FRAME) return len;
  memset(buf + len, 0, FG_ETH_MIN_FRAME - len);
  return FG_ETH_MIN_FRAME;
}

uint32_t fg_net_build_arp(uint8_t* buf, uint16_t op, const uint8_t eth_dst[6], const uint8_t our_mac[6],
                          uint32_t our_ip, const uint8_t target_mac[6], uint32_t target_ip) {
  uint8_t* a = buf + eth_header(buf, eth_dst, our_mac, FG_ETHERTYPE_ARP);
  fg_put_be16(a, 1);
  fg_put_be16(a + 2, FG_ETHERTYPE_IPV4);
  a[4] = 6;
  a[5] = 4;
  fg_put_be16(a + 6, op);
  memcpy(a + 8, our_mac, 6);
  fg_put_be32(a + 14, our_ip);
  memcpy(a + 18, target_mac, 6);
  fg_put_be32(a + 24, target_ip);
  return pad(buf, FG_ETH_HLEN + FG_ARP_LEN);
}

uint32_t fg_net_build_udp(uint8_t* buf, const struct fg_udp_route* r, const void* data, uint32_t len) {
  uint8_t* ip = buf + eth_header(buf, r->dst_mac, r->src_mac, FG_ETHERTYPE_IPV4);
  uint8_t* udp = ip + FG_IPV4_HLEN;
  uint16_t udp_len = (uint16_t)(FG_UDP_HLEN + len);
  ip[0] = 0x45; /* version 4, no options */
  ip[1] = 0;
  fg_put_be16(ip + 2, (uint16_t)(FG_IPV4_HLEN + udp_len));
  fg_put_be16(ip + 4, r->ip_id);
  fg_put_be16(ip + 6, 0x4000); /* don't fragment: we never do */
  ip[8] = 64;
  ip[9] = FG_IPPROTO_UDP;
  fg_put_be16(ip + 10, 0);
  fg_put_be32(ip + 12, r->src_ip);
  fg_put_be32(ip + 16, r->dst_ip);
  fg_put_be16(ip + 10, fg_csum_fold(fg_csum_add(0, ip, FG_IPV4_HLEN)));

  fg_put_be16(udp, r->src_port);
  fg_put_be16(udp + 2, r->dst_port);
  fg_put_be16(udp + 4, udp_len);
  fg_put_be16(udp + 6, 0);
  memcpy(udp + FG_UDP_HLEN, data, len);
  uint16_t sum = fg_csum_fold(udp_sum(ip + 12, udp, udp_len));
  fg_put_be16(udp + 6, sum ? sum : 0xffff); /* 0 on the wire would mean "no checksum" */
  return pad(buf, FG_ETH_HLEN + FG_IPV4_HLEN + udp_len);
}

int fg_ip_parse(const char* s, uint32_t* ip) {
  uint32_t r = 0;
  for (int part = 0; part < 4; ++part) {
    if (part && *s++ != '.') return -1;
    uint32_t v = 0, digits = 0;
    for (; *s >= '0' && *s <= '9'; ++s) {
      if (++digits > 3) return -1;
      v = v * 10 + (uint32_t)(*s - '0');
    }
    if (digits == 0 || v > 255) return -1;
    r = r << 8 | v;
  }
  if (*s) return -1;
  *ip = r;
  return 0;
}

static char* put_dec(char* p, uint32_t v) {
  if (v >= 100) *p++ = (char)('0' + v / 100);
  if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
  *p++ = (char)('0' + v % 10);
  return p;
}

char* fg_ip_format(uint32_t ip, char* buf) {
  char* p = buf;
  for (int shift = 24; shift >= 0; shift -= 8) {
    p = put_dec(p, ip >> shift & 0xff);
    if (shift) *p++ = '.';
  }
  *p = 0;
  return buf;
}

char* fg_mac_format(const uint8_t mac[6], char* buf) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 6; ++i) {
    buf[i * 3] = hex[mac[i] >> 4];
    buf[i * 3 + 1] = hex[mac[i] & 0xf];
    buf[i * 3 + 2] = i < 5 ? ':' : 0;
  }
  return buf;
}
