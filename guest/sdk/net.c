/* The paravirtual NIC driver and the stack's control flow (ferry_net.h): receive and transmit
 * rings, ARP answers and resolution, UDP delivery and sending. Frame formats live in
 * net_frame.c, the ARP cache in net_arp.c.
 *
 * Buffer i always sits in ring slot i on both queues. Receive: every slot is posted, and a
 * consumed slot is reposted at once, so avail == consumed + entries and the repost lands in
 * the slot just read. Transmit: a slot is free once the device completed it, and with it the
 * buffer of the same index. */
#include "ferry_guest.h"
#include "net_internal.h"
#include "queue.h"

#define RX_ENTRIES FG_NET_RX_BUFFERS
#define TX_ENTRIES 64
#define BUF_BYTES 2048 /* >= FERRY_NET_MAX_FRAME, the device's minimum receive capacity */

FG_RING_STORAGE(rx_ring, RX_ENTRIES);
FG_RING_STORAGE(tx_ring, TX_ENTRIES);
static uint8_t rx_buf[RX_ENTRIES][BUF_BYTES] __attribute__((aligned(64)));
static uint8_t tx_buf[TX_ENTRIES][BUF_BYTES] __attribute__((aligned(64)));
static struct fg_queue rxq, txq;
static struct fg_arp_cache arp;
static struct fg_net_stats stats;
static uint8_t our_mac[6];
static uint32_t our_ip;
static uint16_t next_ip_id;
static int net_up;

static const uint8_t zero_mac[6];

_Static_assert(BUF_BYTES >= FERRY_NET_MAX_FRAME, "receive buffers must hold a whole frame");
_Static_assert(RX_ENTRIES <= FERRY_RING_MAX_ENTRIES && (RX_ENTRIES & (RX_ENTRIES - 1)) == 0, "ring size");
_Static_assert(TX_ENTRIES <= FERRY_RING_MAX_ENTRIES && (TX_ENTRIES & (TX_ENTRIES - 1)) == 0, "ring size");

static void rx_post(uint32_t buffer) {
  fg_queue_post(&rxq, (uint64_t)rx_buf[buffer], BUF_BYTES, 0, 0, buffer);
}

/* (Re)registers the receive ring with every buffer posted. Returns FERRY_E_*. */
static uint32_t rx_setup(void) {
  uint32_t r = fg_queue_setup(&rxq, FERRY_QUEUE_NET_RX, &rx_ring.hdr, RX_ENTRIES);
  if (r != FERRY_E_OK) return r;
  for (uint32_t i = 0; i < RX_ENTRIES; ++i) rx_post(i);
  return fg_queue_notify(&rxq);
}

static uint32_t tx_setup(void) { return fg_queue_setup(&txq, FERRY_QUEUE_NET_TX, &tx_ring.hdr, TX_ENTRIES); }

int fg_net_flush(void) {
  if (!net_up) return FG_NET_E_NODEV;
  if (txq.avail == txq.consumed) return 0;
  uint32_t r = fg_queue_notify(&txq);
  uint32_t used = fg_queue_used(&txq);
  for (; txq.consumed != used; txq.consumed++) {
    if (txq.desc[fg_queue_slot(&txq, txq.consumed)].status == FERRY_STATUS_OK) {
      stats.tx_frames++;
    } else {
      stats.tx_errors++;
    }
  }
  if (r == FERRY_E_OK && txq.consumed == txq.avail) return 0;
  /* The device broke the ring or left frames behind (it completes all of them before the
   * doorbell returns): those frames are lost, and a fresh ring makes sending work again. */
  stats.tx_errors += txq.avail - txq.consumed;
  if (tx_setup() != FERRY_E_OK) net_up = 0;
  return FG_NET_E_QUEUE;
}

/* The buffer for the next frame, flushing first when the ring is full; NULL if unusable. */
static uint8_t* tx_reserve(void) {
  if (net_up && fg_queue_space(&txq) == 0) (void)fg_net_flush();
  if (!net_up || fg_queue_space(&txq) == 0) return 0;
  return tx_buf[fg_queue_slot(&txq, txq.avail)];
}

/* Posts the frame built in tx_reserve()'s buffer; the doorbell waits for fg_net_flush(). */
static void tx_commit(uint32_t len) {
  uint32_t slot = fg_queue_slot(&txq, txq.avail);
  fg_queue_post(&txq, (uint64_t)tx_buf[slot], len, 0, 0, slot);
}

static void send_arp(uint16_t op, const uint8_t eth_dst[6], const uint8_t target_mac[6], uint32_t target_ip) {
  uint8_t* b = tx_reserve();
  if (!b) return;
  tx_commit(fg_net_build_arp(b, op, eth_dst, our_mac, our_ip, target_mac, target_ip));
  if (op == FG_ARP_REPLY) {
    stats.arp_replies++;
  } else {
    stats.arp_requests++;
  }
}

void fg_net_announce(void) {
  /* Gratuitous ARP: a request for our own address, so switches and peers learn our MAC. */
  if (net_up) send_arp(FG_ARP_REQUEST, fg_mac_broadcast, zero_mac, our_ip);
}

int fg_net_init(uint32_t ip) {
  const volatile struct ferry_shared_page* sp = fg_shared();
  if (!sp->net_present) return FG_NET_E_NODEV;
  for (int i = 0; i < 6; ++i) our_mac[i] = sp->net_mac[i];
  our_ip = ip;
  next_ip_id = (uint16_t)fg_mix64(fg_now_ns());
  uint32_t r = tx_setup();
  if (r == FERRY_E_OK) r = rx_setup();
  if (r != FERRY_E_OK) return r == FERRY_E_NODEV ? FG_NET_E_NODEV : FG_NET_E_QUEUE;
  net_up = 1;
  fg_net_announce();
  return fg_net_flush();
}

/* Handles one received frame; returns 1 if it queued an answer. */
static int rx_frame(const uint8_t* frame, uint32_t len, fg_udp_handler handler, void* ctx) {
  struct fg_rx_frame p;
  enum fg_rx_kind kind = fg_net_parse(frame, len, our_mac, our_ip, &p);
  if (kind == FG_RX_MALFORMED || kind == FG_RX_IGNORED) {
    if (kind == FG_RX_MALFORMED) stats.rx_malformed++;
    stats.rx_dropped++;
    return 0;
  }
  if (kind == FG_RX_UDP) {
    fg_arp_learn(&arp, p.src_ip, p.src_mac, 1); /* replies go back the way the request came */
    stats.rx_udp++;
    if (handler) handler(ctx, p.src_ip, p.src_port, p.dst_port, p.payload, p.payload_len);
    return 0;
  }
  stats.rx_arp++;
  const int for_us = p.arp_target_ip == our_ip && p.src_ip != our_ip; /* not someone claiming our IP */
  if (p.src_ip != our_ip) fg_arp_learn(&arp, p.src_ip, p.src_mac, for_us);
  if (p.arp_op != FG_ARP_REQUEST || !for_us) return 0;
  /* Probes (sender 0.0.0.0) get an answer too, so their sender sees the address is taken. */
  send_arp(FG_ARP_REPLY, p.src_mac, p.src_mac, p.src_ip);
  return 1;
}

int fg_net_poll(fg_udp_handler handler, void* ctx) {
  if (!net_up) return 0;
  uint32_t done = 0, answered = 0;
  uint32_t used = fg_queue_used(&rxq);
  while (rxq.consumed != used && done < RX_ENTRIES) {
    /* Below `used` (acquire) the descriptor and its buffer are ours; the device is only
     * writing slots at or beyond it. */
    uint32_t slot = fg_queue_slot(&rxq, rxq.consumed);
    const struct ferry_desc* d = &rxq.desc[slot];
    stats.rx_frames++;
    if (d->status == FERRY_STATUS_OK && d->len <= BUF_BYTES) {
      answered += (uint32_t)rx_frame(rx_buf[slot], d->len, handler, ctx);
    } else {
      stats.rx_malformed++;
      stats.rx_dropped++;
    }
    rxq.consumed++;
    rx_post(slot);
    ++done;
    if (rxq.consumed == used) used = fg_queue_used(&rxq);
  }
  /* Tell the device about the reposted buffers; a broken ring gets a fresh start. */
  if (done && fg_queue_notify(&rxq) != FERRY_E_OK && rx_setup() != FERRY_E_OK) net_up = 0;
  if (answered) (void)fg_net_flush();
  return (int)done;
}

int fg_udp_send(uint32_t dst_ip, uint16_t src_port, uint16_t dst_port, const void* data, uint32_t len) {
  if (!net_up) return FG_NET_E_NODEV;
  if (len > FG_UDP_MAX_PAYLOAD) return FG_NET_E_TOOBIG;
  const uint8_t* mac = dst_ip == FG_IP_BROADCAST ? fg_mac_broadcast : fg_arp_lookup(&arp, dst_ip);
  if (!mac) {
    stats.arp_misses++;
    if (fg_arp_want_request(&arp, dst_ip, fg_now_ns())) {
      /* Sent at once: a caller that just had its datagram dropped has no reason to flush. */
      send_arp(FG_ARP_REQUEST, fg_mac_broadcast, zero_mac, dst_ip);
      (void)fg_net_flush();
    }
    return FG_NET_E_NOROUTE;
  }
  uint8_t* b = tx_reserve();
  if (!b) return net_up ? FG_NET_E_QUEUE : FG_NET_E_NODEV;
  struct fg_udp_route r = {our_mac, mac, our_ip, dst_ip, next_ip_id++, src_port, dst_port};
  tx_commit(fg_net_build_udp(b, &r, data, len));
  return 0;
}

const struct fg_net_stats* fg_net_stats(void) { return &stats; }
const uint8_t* fg_net_mac(void) { return our_mac; }
uint32_t fg_net_ip(void) { return our_ip; }
