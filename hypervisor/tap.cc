#include "tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace ferry::hypervisor {
namespace {

ifreq NamedRequest(const std::string& name) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  return ifr;
}

}  // namespace

Result<UniqueFd> OpenTap(const std::string& name, const std::string& bridge) {
  if (name.empty() || name.size() >= IFNAMSIZ) return InvalidArgument("TAP name '" + name + "' must be 1-15 characters");
  if (bridge.size() >= IFNAMSIZ) return InvalidArgument("bridge name '" + bridge + "' is too long");
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open /dev/net/tun");
  ifreq ifr = NamedRequest(name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    int err = errno;
    return ErrnoError("attach TAP " + name + (err == EBUSY ? " (another process has it open)" : ""), err);
  }
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoError("socket for interface control");
  ifreq flags = NamedRequest(name);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &flags) != 0) return ErrnoError("read flags of " + name);
  flags.ifr_flags |= IFF_UP;
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &flags) != 0) return ErrnoError("bring up " + name);
  if (!bridge.empty()) {
    ifreq index = NamedRequest(name);
    if (::ioctl(sock.get(), SIOCGIFINDEX, &index) != 0) return ErrnoError("find interface " + name);
    ifreq br = NamedRequest(bridge);
    br.ifr_ifindex = index.ifr_ifindex;
    if (::ioctl(sock.get(), SIOCBRADDIF, &br) != 0 && errno != EBUSY) {
      return ErrnoError("add " + name + " to bridge " + bridge);
    }
  }
  return fd;
}

}  // namespace ferry::hypervisor
