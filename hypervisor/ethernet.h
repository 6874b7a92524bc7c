// The few Ethernet/ARP facts the NIC model needs, as pure functions over frames: announcing a
// guest's address after it moved (gratuitous ARP, as QEMU and Xen do) and learning that
// address from the guest's own frames. Unit-tested; thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace ferry::hypervisor {

using Mac = std::array<uint8_t, 6>;

// A broadcast ARP request with sender = target = `ip` (host order), from `mac`: every switch
// on the way relearns which port the MAC is behind, and neighbours refresh their caches.
std::vector<uint8_t> GratuitousArp(const Mac& mac, uint32_t ip);

// The IPv4 address the guest uses, if `frame` (sent by the guest) shows it: the sender of an
// ARP packet, or the source of an IPv4 packet, in either case from the guest's own MAC.
std::optional<uint32_t> SenderIpv4(std::span<const uint8_t> frame, const Mac& mac);

// The Ethernet source address of a frame (nullopt if shorter than a header).
std::optional<Mac> SourceMac(std::span<const uint8_t> frame);

}  // namespace ferry::hypervisor
