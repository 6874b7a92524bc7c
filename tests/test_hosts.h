// TestHosts: N "hosts" on this machine for end-to-end tests (DESIGN.md "Test hosts"): one
// network namespace per host, each with a veth whose outer end is enslaved to a bridge in the
// root namespace, addresses 127.31.0.<i+1>/24 with route_localnet. Names carry the test's
// PID so concurrent tests never collide. The destructor removes everything it created, by
// name. Needs root and iproute2; Create() reports why it cannot run otherwise.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ferry/base/status.h"

namespace ferry::e2e {

class TestHosts {
 public:
  static Result<std::unique_ptr<TestHosts>> Create(int hosts);
  ~TestHosts();
  TestHosts(const TestHosts&) = delete;
  TestHosts& operator=(const TestHosts&) = delete;

  const std::string& netns(int i) const { return netns_[i]; }
  std::string address(int i) const { return "127.31.0." + std::to_string(i + 1); }
  // argv prefixed to run inside host i (`ip netns exec` keeps the PID: it execs).
  std::vector<std::string> In(int i, std::vector<std::string> argv) const;
  // Cuts host i off the bridge (its veth goes down) or reconnects it.
  Status SetLink(int i, bool up);

 private:
  TestHosts() = default;
  std::string bridge_;
  std::vector<std::string> netns_, veth_;
};

}  // namespace ferry::e2e
