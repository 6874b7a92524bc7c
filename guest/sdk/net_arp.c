/* The network stack's ARP cache: a small table of IP -> MAC, searched linearly (64 entries
 * are fewer cycles to scan than one exit costs). See net_internal.h. */
#include "ferry_guest.h"
#include "net_internal.h"

static struct fg_arp_entry* find(struct fg_arp_cache* c, uint32_t ip) {
  for (uint32_t i = 0; i < FG_ARP_ENTRIES; ++i) {
    if (c->entry[i].state != FG_ARP_FREE && c->entry[i].ip == ip) return &c->entry[i];
  }
  return 0;
}

/* A free entry if there is one, else the next in round-robin order: an evicted peer is
 * simply learned again from its next packet. */
static struct fg_arp_entry* claim(struct fg_arp_cache* c, uint32_t ip) {
  struct fg_arp_entry* e = 0;
  for (uint32_t i = 0; i < FG_ARP_ENTRIES && !e; ++i) {
    if (c->entry[i].state == FG_ARP_FREE) e = &c->entry[i];
  }
  if (!e) {
    e = &c->entry[c->next_victim];
    c->next_victim = (c->next_victim + 1) % FG_ARP_ENTRIES;
  }
  memset(e, 0, sizeof *e);
  e->ip = ip;
  return e;
}

const uint8_t* fg_arp_lookup(const struct fg_arp_cache* c, uint32_t ip) {
  for (uint32_t i = 0; i < FG_ARP_ENTRIES; ++i) {
    if (c->entry[i].state == FG_ARP_RESOLVED && c->entry[i].ip == ip) return c->entry[i].mac;
  }
  return 0;
}

void fg_arp_learn(struct fg_arp_cache* c, uint32_t ip, const uint8_t mac[6], int create) {
  if (ip == 0 || (mac[0] & 1)) return; /* probes and multicast senders teach nothing */
  struct fg_arp_entry* e = find(c, ip);
  if (!e) {
    if (!create) return;
    e = claim(c, ip);
  }
  memcpy(e->mac, mac, 6);
  e->state = FG_ARP_RESOLVED;
}

int fg_arp_want_request(struct fg_arp_cache* c, uint32_t ip, uint64_t now_ns) {
  struct fg_arp_entry* e = find(c, ip);
  if (e && e->state == FG_ARP_RESOLVED) return 0;
  if (e && now_ns - e->requested_ns < FG_ARP_RETRY_NS) return 0;
  if (!e) e = claim(c, ip);
  e->state = FG_ARP_PENDING;
  e->requested_ns = now_ns;
  return 1;
}
