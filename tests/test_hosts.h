// TestHosts: N "hosts" on this machine for end-to-end tests (DESIGN.md "Test hosts"): one
// network namespace per host, each with a veth whose outer end is enslaved to a bridge in the
// root namespace, addresses 127.31.0.<i+1>/24 with route_localnet. Names carry the test's
// PID so concurrent tests never collide. The destructor removes everything it created, by
// name. Needs root and iproute2; Create() reports why it cannot run otherwise.
//
// With guest networks, each host also has a bridge kGuestBridge inside its namespace that
// holds its uplink (and its address), so a guest's TAP enslaved there (`--net
// TAP,bridge=gbr`) is on the same Ethernet as every host and as the client namespace
// (127.31.0.200), from which load clients talk to guests at 127.31.0.100 and up. Shared
// storage is modelled by every host opening the same image path.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ferry/base/status.h"

namespace ferry::e2e {

class TestHosts {
 public:
  static constexpr const char* kGuestBridge = "gbr";
  struct Options {
    bool guest_network = false;  // guest bridges in the hosts and a client namespace
  };
  static Result<std::unique_ptr<TestHosts>> Create(int hosts, Options options);
  static Result<std::unique_ptr<TestHosts>> Create(int hosts) { return Create(hosts, Options{}); }
  ~TestHosts();
  TestHosts(const TestHosts&) = delete;
  TestHosts& operator=(const TestHosts&) = delete;

  const std::string& netns(int i) const { return netns_[i]; }
  const std::string& uplink(int i) const { return veth_[i]; }  // host i's veth in the root namespace
  const std::string& client_netns() const { return client_ns_; }
  std::string address(int i) const { return "127.31.0." + std::to_string(i + 1); }
  // argv prefixed to run inside host i (`ip netns exec` keeps the PID: it execs).
  std::vector<std::string> In(int i, std::vector<std::string> argv) const;
  // The client namespace (guest_network only): argv prefixed to run there, and its address.
  std::vector<std::string> InClient(std::vector<std::string> argv) const;
  static std::string client_address() { return "127.31.0.200"; }
  static std::string guest_address(int k) { return "127.31.0." + std::to_string(100 + k); }
  // Cuts host i off the bridge (its veth goes down) or reconnects it.
  Status SetLink(int i, bool up);

 private:
  TestHosts() = default;
  // Adds namespace `ns` with uplink veth `veth` on the root bridge and `address`/24 on
  // `addr_dev` inside (eth0, or the guest bridge holding eth0).
  Status AddNamespace(const std::string& ns, const std::string& veth, const std::string& address, bool guest_bridge);
  std::string bridge_;
  std::vector<std::string> netns_, veth_;
  std::string client_ns_;
};

}  // namespace ferry::e2e
