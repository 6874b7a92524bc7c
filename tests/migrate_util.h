// Helpers shared by the migration end-to-end tests (pre-copy and post-copy): a `ferry
// incoming` destination and the address it bound, a guest VMM, and the checks every
// migration test makes of the VM that is left (running, verifying itself).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "test_hosts.h"

namespace ferry::e2e {

// A `ferry incoming` process and the port it bound.
struct Destination {
  std::unique_ptr<Process> process;
  std::string address;  // HOST:PORT
};

// `ferry incoming --listen LISTEN --api DIR/NAME.sock EXTRA...`, in host `host` of `hosts` if given.
Destination StartIncoming(const TempDir& dir, const std::string& name, const std::string& listen,
                          std::vector<std::string> extra = {}, const TestHosts* hosts = nullptr, int host = 0);
// `ferry run GUEST --mem MEM --vcpus 2 --api DIR/NAME.sock -- GUEST_ARGS`.
std::unique_ptr<Process> StartGuest(const TempDir& dir, const std::string& name, const std::string& guest,
                                    const std::string& mem, std::vector<std::string> guest_args = {},
                                    const TestHosts* hosts = nullptr, int host = 0);
// Waits until memcheck has written a good part of its pages, so a migration carries real data.
void AwaitMemcheckBusy(const std::string& sock);
void ExpectVerifies(const std::string& sock);
void ExpectRunning(const std::string& sock);

}  // namespace ferry::e2e
