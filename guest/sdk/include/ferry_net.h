/* The guest SDK's network stack for Ferry's paravirtual NIC: Ethernet, ARP, IPv4 and UDP,
 * just enough for a UDP service on one address.
 *
 * fg_net_init() posts 64 receive buffers (2 KiB each) and sets up a transmit ring of 64 more,
 * then announces the guest's address with a gratuitous ARP. fg_net_poll() takes every frame
 * the device has delivered: it answers ARP requests for our address, learns IP->MAC pairs
 * from ARP and from valid IPv4 packets, and hands each valid UDP datagram for our address to
 * the caller's handler; everything malformed is counted and dropped. fg_udp_send() queues a
 * datagram into the next free transmit buffer; fg_net_flush() sends every queued frame with
 * one doorbell (a full transmit ring flushes itself). No fragments, no IP options on send, no
 * routing: a reply goes to the MAC the peer's last packet came from.
 *
 * Addresses and ports are in host byte order in this API; the stack converts on the wire.
 * Received payloads live in the device's buffer, valid only during the handler call.
 * Not thread-safe: one vCPU owns the NIC. */
#ifndef FERRY_NET_H_
#define FERRY_NET_H_

#include <stdint.h>

#define FG_NET_E_NODEV (-1)   /* the VM has no NIC, or fg_net_init() was not called */
#define FG_NET_E_QUEUE (-2)   /* the device refused a ring */
#define FG_NET_E_NOROUTE (-3) /* destination MAC unknown: datagram dropped, an ARP request sent (with
                               * whatever else was queued; at most one per address per 100 ms) */
#define FG_NET_E_TOOBIG (-4)  /* payload over FG_UDP_MAX_PAYLOAD */

#define FG_NET_RX_BUFFERS 64 /* also the most frames one fg_net_poll() processes */
#define FG_UDP_MAX_PAYLOAD 1472 /* 1500 - IPv4 header - UDP header */

struct fg_net_stats {
  uint64_t rx_frames;    /* receive descriptors completed by the device */
  uint64_t rx_dropped;   /* frames neither delivered nor answered: malformed or not for us */
  uint64_t rx_malformed; /* of those, the ones that failed validation (length, checksum, fragment, ...) */
  uint64_t rx_udp;       /* datagrams handed to the handler */
  uint64_t rx_arp;       /* valid ARP packets */
  uint64_t arp_replies;  /* ARP replies we sent for our address */
  uint64_t arp_requests; /* ARP requests we sent (resolution and announcements) */
  uint64_t arp_misses;   /* datagrams dropped on send: destination MAC unknown */
  uint64_t tx_frames;    /* frames the device sent */
  uint64_t tx_errors;    /* frames the device refused, or lost with a broken ring */
};

/* Called for each valid UDP datagram addressed to us. */
typedef void (*fg_udp_handler)(void* ctx, uint32_t src_ip, uint16_t src_port, uint16_t dst_port,
                               const uint8_t* payload, uint32_t len);

/* Brings the NIC up with address `ip`. Returns 0, FG_NET_E_NODEV or FG_NET_E_QUEUE. */
int fg_net_init(uint32_t ip);
/* Processes up to FG_NET_RX_BUFFERS received frames and gives their buffers back to the
 * device. Returns the number of frames processed. If it answered ARP it also flushes, which
 * sends whatever else was queued. */
int fg_net_poll(fg_udp_handler handler, void* ctx);
/* Queues one datagram. 0, or FG_NET_E_* (the datagram was dropped). */
int fg_udp_send(uint32_t dst_ip, uint16_t src_port, uint16_t dst_port, const void* data, uint32_t len);
/* Sends every queued frame (one doorbell). 0, or FG_NET_E_QUEUE if frames were lost. */
int fg_net_flush(void);
/* A gratuitous ARP for our address (queued; flush to send). */
void fg_net_announce(void);

const struct fg_net_stats* fg_net_stats(void);
const uint8_t* fg_net_mac(void);
uint32_t fg_net_ip(void);

/* "A.B.C.D" -> host-order address. 0 on success, -1 if `s` is not exactly a dotted quad. */
int fg_ip_parse(const char* s, uint32_t* ip);
/* Formats into buf (at least 16 bytes for an IP, 18 for a MAC); returns buf. */
char* fg_ip_format(uint32_t ip, char* buf);
char* fg_mac_format(const uint8_t mac[6], char* buf);

#endif /* FERRY_NET_H_ */
