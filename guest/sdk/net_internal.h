/* Private to the guest SDK's network stack: wire constants, byte-order helpers, the frame
 * codec (net_frame.c) and the ARP cache (net_arp.c). None of it touches a device or a
 * hypercall, so a host-side test can compile those two files as they are; net.c drives them.
 * On the wire every multi-byte field is big-endian; x86 is little-endian, so fields are read
 * and written byte by byte (which also keeps unaligned headers harmless). */
#ifndef FERRY_GUEST_NET_INTERNAL_H_
#define FERRY_GUEST_NET_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "ferry_net.h"

#define FG_ETH_HLEN 14
#define FG_ETH_MIN_FRAME 60 /* without FCS; shorter frames are padded with zeros */
#define FG_ETHERTYPE_IPV4 0x0800
#define FG_ETHERTYPE_ARP 0x0806
#define FG_ARP_LEN 28
#define FG_ARP_REQUEST 1
#define FG_ARP_REPLY 2
#define FG_IPV4_HLEN 20
#define FG_UDP_HLEN 8
#define FG_IPPROTO_UDP 17
#define FG_IP_BROADCAST 0xffffffffu

static inline uint16_t fg_get_be16(const uint8_t* p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t fg_get_be32(const uint8_t* p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void fg_put_be16(uint8_t* p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void fg_put_be32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

extern const uint8_t fg_mac_broadcast[6];

/* Internet checksum (RFC 1071): accumulate big-endian 16-bit words, then fold. An odd length
 * is padded with a zero byte, so only the last piece of a sum may be odd. fg_csum_fold()
 * returns the complement as it goes on the wire; a buffer that includes its own correct
 * checksum folds to 0. */
uint64_t fg_csum_add(uint64_t sum, const uint8_t* p, size_t len);
uint16_t fg_csum_fold(uint64_t sum);

/* What a received frame turned out to be. */
enum fg_rx_kind {
  FG_RX_MALFORMED, /* failed validation */
  FG_RX_IGNORED,   /* well-formed but not for us: other MAC or IP, ethertype, protocol */
  FG_RX_ARP,       /* a valid ARP request or reply */
  FG_RX_UDP,       /* a valid UDP datagram for our address */
};

/* Pointers point into the frame. */
struct fg_rx_frame {
  const uint8_t* src_mac; /* Ethernet source; for ARP the sender hardware address */
  uint32_t src_ip;        /* IPv4 source; for ARP the sender protocol address */
  uint16_t arp_op;
  uint32_t arp_target_ip;
  uint16_t src_port, dst_port;
  const uint8_t* payload;
  uint32_t payload_len;
};

enum fg_rx_kind fg_net_parse(const uint8_t* frame, uint32_t len, const uint8_t our_mac[6], uint32_t our_ip,
                             struct fg_rx_frame* out);

/* Builders write a whole frame (padded to FG_ETH_MIN_FRAME) and return its length. */
uint32_t fg_net_build_arp(uint8_t* buf, uint16_t op, const uint8_t eth_dst[6], const uint8_t our_mac[6],
                          uint32_t our_ip, const uint8_t target_mac[6], uint32_t target_ip);

struct fg_udp_route {
  const uint8_t* src_mac;
  const uint8_t* dst_mac;
  uint32_t src_ip, dst_ip;
  uint16_t ip_id;
  uint16_t src_port, dst_port;
};
/* len <= FG_UDP_MAX_PAYLOAD; buf holds at least FERRY_NET_MAX_FRAME bytes. */
uint32_t fg_net_build_udp(uint8_t* buf, const struct fg_udp_route* r, const void* data, uint32_t len);

/* The ARP cache: IP -> MAC for peers, with a slot per outstanding request so resolution is
 * asked for at most every FG_ARP_RETRY_NS per address. Evicts round-robin when full. */
#define FG_ARP_ENTRIES 64
#define FG_ARP_RETRY_NS 100000000ull

struct fg_arp_entry {
  uint32_t ip;
  uint8_t mac[6];
  uint8_t state; /* FG_ARP_FREE, FG_ARP_PENDING, FG_ARP_RESOLVED */
  uint8_t reserved;
  uint64_t requested_ns;
};
#define FG_ARP_FREE 0
#define FG_ARP_PENDING 1
#define FG_ARP_RESOLVED 2

struct fg_arp_cache {
  struct fg_arp_entry entry[FG_ARP_ENTRIES];
  uint32_t next_victim;
};

/* The MAC for `ip`, or NULL if unresolved. */
const uint8_t* fg_arp_lookup(const struct fg_arp_cache* c, uint32_t ip);
/* Records ip -> mac. With create == 0 only an entry that already exists is updated (RFC 826:
 * a packet not meant for us may refresh what we know but does not add to it). */
void fg_arp_learn(struct fg_arp_cache* c, uint32_t ip, const uint8_t mac[6], int create);
/* 1 if a request for `ip` should go out now (and remembers that it did), else 0. */
int fg_arp_want_request(struct fg_arp_cache* c, uint32_t ip, uint64_t now_ns);

#endif /* FERRY_GUEST_NET_INTERNAL_H_ */
