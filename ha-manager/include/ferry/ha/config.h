// The HA cluster's configuration (`ferry ha agent --config FILE`), one JSON file shared by
// every host: the hosts (Corosync node ids, addresses, a working directory each) and the
// protected VMs (guest, resources, preferred primary and backup, the port their standby
// listens on). Test clusters also name each host's network namespace and uplink, which
// `ferry drill` uses to kill or cut off a host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::ha {

struct HostConfig {
  std::string name;
  uint32_t nodeid = 0;   // the Corosync node id
  std::string address;   // replication traffic goes here (127.x in test clusters)
  std::string dir;       // this host's own files: disk images, API sockets, logs
  std::string guest_bridge;  // the bridge guests' TAPs join (optional)
  std::string netns;     // test clusters: the host's network namespace (drills kill its processes)
  std::string uplink;    // test clusters: its veth in the root namespace (drills cut it)
  // Capacity the placement policy measures against; 0: the agent reads its machine's own
  // (online CPUs, MemTotal). Test clusters share one machine, so they set them.
  double cpus = 0;
  uint64_t mem_bytes = 0;
  std::string metrics;   // ADDR:PORT where the agent serves Prometheus metrics ("" = off)
  // The command that starts this host's Corosync again after a drill killed it (the
  // restart-corosync drill), e.g. ["systemctl", "start", "corosync"]; test clusters write their
  // own. Empty: that drill is refused for this host.
  std::vector<std::string> corosync_start;
};

// Where VMs may run, enforced by the agents with live migration (balance.h). A threshold of
// 0 is off. Anti-affine VMs never share a host when another host can take one of them.
struct PlacementPolicy {
  double max_cpu_pct = 0;     // a host's VMs' CPU use, % of its cpus
  double max_mem_pct = 0;     // a host's VMs' memory, % of its mem_bytes
  std::vector<std::vector<std::string>> anti_affinity;
  double interval_s = 10;     // how often the leader agent checks (0: never on its own)
  double settle_s = 5;        // a VM moved or started this recently is not moved again
};

struct VmSpec {
  std::string name;
  std::string guest;     // guest ELF
  std::string mem = "64M";
  uint32_t vcpus = 1;
  uint64_t disk_bytes = 0;  // 0: no disk; else each host keeps its own image of this size
  bool net = false;         // a NIC on the host's guest bridge
  std::vector<std::string> guest_args;
  uint64_t mem_bytes = 64ull << 20;  // mem, parsed
  uint64_t sync_bandwidth = 0;       // bytes/s cap on its initial syncs (re-protection, moves); 0: none
  std::string primary, backup;  // preferred hosts
  uint16_t port = 0;            // the standby listens on its host's address:port
  std::string service;          // ADDR:PORT of the guest's kvstore, for drills' load client
};

struct ClusterConfig {
  std::string name = "ferry";
  // How replication between hosts is protected (migrate/security.h), handed by every agent
  // to the VMMs it starts: a shared key (TLS 1.3 PSK), or certificates (mutual TLS 1.3; a
  // "{host}" in a path is the host's name, so one config names each host's own files, and a
  // standby's certificate must name its host), or "insecure": true for plaintext between
  // hosts. With none, replication between hosts is refused.
  std::string key_file;
  std::string tls_cert, tls_key, tls_ca;
  bool insecure = false;
  double interval_ms = 25;      // replication epochs
  uint64_t io_timeout_ms = 1000;  // replication: a silent peer is lost after this
  // How long a primary's host must have been out of the view before its backup claims the
  // VM: the cut-off host sees its quorum go at about the same moment, and this margin lets
  // it fence first. Output commit already keeps its unacknowledged output in; this makes
  // the order certain rather than likely.
  uint64_t promote_delay_ms = 200;
  // The agents' watchdog lease on their VMMs (0: none). With one, a VMM outlives its agent:
  // it fences its VM unless the agent (or one restarted in time, which adopts it) renews the
  // lease within lease_ms, and a backup waits lease_ms (not promote_delay_ms) after its
  // owner's host left the view before it claims the VM. Without one, VMMs die with their
  // agent and a failover waits promote_delay_ms. The trade: lease_ms added to every host
  // failure's recovery time, for an agent crash or upgrade that costs no failover.
  uint64_t lease_ms = 0;
  // A VMM (primary or standby) that has answered none of its agent's probes for this long is
  // hung (stopped, deadlocked, stuck in the kernel): its agent kills it, and the VM fails
  // over (or is re-protected) as after a crash. A hung primary serves nobody and holds up
  // nothing else; left alone it stayed the VM's owner forever. 0: never (ride it out).
  uint64_t hung_vmm_ms = 10000;
  // Each VMM's log (HOSTDIR/VM.log: its stdout and stderr, the guest's console among them)
  // is kept under this many MiB: past it, its last 1 MiB is kept as VM.log.1 and VM.log
  // starts again. A guest that prints without end had filled the host's disk.
  uint64_t vm_log_max_mb = 64;
  std::string client_netns;     // test clusters: where drills run the load client
  PlacementPolicy policy;
  std::vector<HostConfig> hosts;
  std::vector<VmSpec> vms;

  static Result<ClusterConfig> Parse(const nlohmann::json& j);
  // A tls_* path for `host` ("{host}" replaced by its name).
  std::string TlsPath(const std::string& path, const std::string& host) const;
  static Result<ClusterConfig> Load(const std::string& path);
  const HostConfig* Host(const std::string& name) const;
  const HostConfig* HostByNode(uint32_t nodeid) const;
  const VmSpec* Vm(const std::string& name) const;
};

}  // namespace ferry::ha
