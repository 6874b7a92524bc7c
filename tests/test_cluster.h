// TestCluster: a real Corosync 3 cluster over TestHosts for end-to-end HA tests
// (shared/notes/corosync-in-namespaces.md). One corosync per host, in the host's network
// namespace and in a private mount namespace whose /run and /var/lib/corosync are bind
// mounts of the host's scratch directories (DIR/hostN/{run,lib}). Every host runs the same
// DIR/corosync.conf, rendered by ha::RenderCorosyncConf as `ferry ha corosync-conf` renders
// it for users: knet with crypto on (aes256, sha256) keyed by one fresh DIR/authkey per
// cluster, votequorum, nodeid = i + 1, name hostI, ring0_addr = the host's 127.31.0.x address.
// Each corosync logs to its stderr, captured in DIR/hostN/corosync-K.err.
//
// The hosts have guest networks (TestHosts::Options::guest_network), so VMs started on them
// are reachable from the client namespace.
//
// Create() returns once every node is quorate with every host a member (bounded). The
// destructor SIGKILLs and reaps the corosyncs it started, by PID, then TestHosts removes the
// namespaces and the scratch directory goes: nothing is left, on success or failure. Needs
// root and corosync (scripts/setup installs it). Not thread-safe: one test thread drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "ferry/base/status.h"
#include "test_hosts.h"

namespace ferry::e2e {

struct ClusterOptions {
  int token_ms = 300;
  std::string cluster_name;  // empty: "ferry-<pid>"
  // Corosync adds (nodes - 2) * token_coefficient to the token timeout; 650 ms by default,
  // which would dominate failure detection in a 3-node test cluster.
  int token_coefficient_ms = 0;
  int consensus_ms = 0;  // 0: corosync's default, 1.2 * token
  // knet declares a link dead after this long without pongs (pings every tenth of it). Its
  // default, token / 2, flapped every link every ~9 s here with token 300 (knet's threads
  // wake every 200 ms); token loss, not the knet link, is what detects a failed node.
  int knet_ping_timeout_ms = 1000;
};

class TestCluster {
 public:
  static Result<std::unique_ptr<TestCluster>> Create(int hosts, ClusterOptions options);
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  TestHosts& hosts() { return *hosts_; }
  int size() const { return static_cast<int>(corosync_.size()); }
  const std::string& netns(int i) const { return hosts_->netns(i); }
  std::string address(int i) const { return hosts_->address(i); }
  uint32_t nodeid(int i) const { return static_cast<uint32_t>(i + 1); }
  const std::string& dir() const { return dir_.path(); }
  std::string corosync_conf() const { return dir_.File("corosync.conf"); }
  std::string authkey() const { return dir_.File("authkey"); }
  std::string host_dir(int i) const { return dir_.File("host" + std::to_string(i)); }
  // argv prefixed to run inside host i's network namespace (where libcpg reaches its corosync).
  std::vector<std::string> In(int i, std::vector<std::string> argv) const { return hosts_->In(i, std::move(argv)); }

  // SIGKILLs host i's corosync and reaps it (a crashed node, as its peers see it).
  Status KillCorosync(int i);
  // The command that starts host i's corosync (in its namespace, foreground), as the HA
  // config's corosync_start gives it to the restart-corosync drill.
  std::vector<std::string> CorosyncCommand(int i) const;
  // Starts host i's corosync again, reaping the old one first (killed by KillCorosync or by
  // a drill from outside); does not wait for quorum.
  Status RestartCorosync(int i);
  // Cuts host i off the others (its uplink goes down), or reconnects it.
  Status Partition(int i) { return hosts_->SetLink(i, false); }
  Status Heal(int i) { return hosts_->SetLink(i, true); }
  // Waits until host i's votequorum says quorate == expected (corosync-quorumtool -s).
  Status WaitQuorate(int i, bool expected, int timeout_ms);
  // Whether host i is quorate now with `members` nodes voting (-1: any number).
  bool Quorate(int i, int members = -1) const;
  // A key of host i's running corosync, read with `corosync-cmapctl -g KEY` in its namespace
  // ("totem.crypto_cipher" -> "aes256"); an error if the key is absent or corosync is down.
  Result<std::string> Cmap(int i, const std::string& key) const;
  // Host i's corosync log so far (for failure messages).
  std::string Log(int i) const;
  // Writes an HA config (`ferry ha agent --config`) for these hosts with `vms` kvstore VMs
  // (kvK: guest address TestHosts::guest_address(K), primary h0, backup h1 for kv0 and h2
  // for the others, standby port 7100+K), a replication key, and returns its path.
  std::string WriteHaConfig(int vms) const;

 private:
  TestCluster() = default;
  Status WriteConfig(int hosts, const ClusterOptions& o) const;
  Status StartCorosync(int i);

  // Declaration order is teardown order reversed: the corosyncs die first, then the
  // namespaces go, then the scratch directory.
  TempDir dir_;
  std::unique_ptr<TestHosts> hosts_;
  std::vector<std::unique_ptr<Process>> corosync_;  // one per host; null while killed
  std::vector<std::string> last_log_;  // a killed corosync's log
  int starts_ = 0;                     // numbers the log files, so a restart keeps the old log
};

}  // namespace ferry::e2e
