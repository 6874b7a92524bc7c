#include "test_cluster.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ferry/ha/corosync_conf.h"

namespace ferry::e2e {
namespace {

bool InPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// The value after "key:" in corosync-quorumtool's output ("Total votes:      3"), or "".
std::string Field(const std::string& out, const std::string& key) {
  std::stringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    size_t v = line.find_first_not_of(" \t", key.size() + 1);
    return v == std::string::npos ? "" : line.substr(v);
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<TestCluster>> TestCluster::Create(int hosts, ClusterOptions options) {
  if (geteuid() != 0) return Unsupported("a test cluster needs root (network and mount namespaces)");
  for (const char* tool : {"corosync", "corosync-quorumtool"}) {
    if (!InPath(tool)) return Unsupported(std::string(tool) + " is not in PATH: run scripts/setup");
  }
  if (hosts < 1 || hosts > 32) return InvalidArgument("a test cluster has 1..32 hosts");
  std::unique_ptr<TestCluster> c(new TestCluster());
  FERRY_ASSIGN_OR_RETURN(c->hosts_, TestHosts::Create(hosts, TestHosts::Options{.guest_network = true}));
  if (options.cluster_name.empty()) options.cluster_name = "ferry-" + std::to_string(getpid());
  c->corosync_.resize(hosts);
  c->last_log_.resize(hosts);
  for (int i = 0; i < hosts; ++i) {
    std::error_code ec;
    for (const char* sub : {"lib", "run"}) std::filesystem::create_directories(c->host_dir(i) + "/" + sub, ec);
    if (ec) return Internal("cannot create " + c->host_dir(i) + ": " + ec.message());
  }
  FERRY_RETURN_IF_ERROR(c->WriteConfig(hosts, options));
  for (int i = 0; i < hosts; ++i) FERRY_RETURN_IF_ERROR(c->StartCorosync(i));
  // Formation takes a few seconds (knet links come up, then totem and votequorum sync).
  bool formed = WaitUntil([&] {
    for (int i = 0; i < hosts; ++i) {
      if (!c->Quorate(i, hosts)) return false;
    }
    return true;
  }, 30000);
  if (!formed) {
    std::string why = "the corosync cluster did not become quorate with " + std::to_string(hosts) +
                      " members within 30 s; host 0's log:\n" + c->Log(0);
    return Timeout(why);
  }
  return c;
}

TestCluster::~TestCluster() {
  for (auto& p : corosync_) p.reset();  // SIGKILL and reap, by PID
  // A corosync a drill started again (restart-corosync) is not our child: it is found, by
  // PID, among the processes of the namespaces this test made, before they go.
  for (int i = 0; i < size(); ++i) {
    CommandResult r = RunCommand({"ip", "netns", "pids", netns(i)}, host_dir(i) + "/pids", 5000);
    std::istringstream ps(r.out);
    for (pid_t p; ps >> p;) {
      if (p > 1 && p != ::getpid()) ::kill(p, SIGKILL);
    }
  }
}

// The cluster's one corosync.conf and authkey, as users get them from `ferry ha corosync-conf`
// (crypto on), with the test cluster's faster timers and corosync logging to stderr.
Status TestCluster::WriteConfig(int hosts, const ClusterOptions& o) const {
  ha::CorosyncSpec spec;
  spec.cluster_name = o.cluster_name;
  for (int n = 0; n < hosts; ++n) spec.nodes.push_back({nodeid(n), "host" + std::to_string(n), address(n)});
  spec.token_ms = o.token_ms;
  spec.token_coefficient_ms = o.token_coefficient_ms;
  spec.consensus_ms = o.consensus_ms;
  spec.knet_ping_interval_ms = std::max(1, o.knet_ping_timeout_ms / 10);
  spec.knet_ping_timeout_ms = o.knet_ping_timeout_ms;
  spec.keyfile = authkey();
  spec.log = ha::CorosyncLog::kStderr;
  FERRY_ASSIGN_OR_RETURN(ha::RenderedCorosyncConf conf, ha::RenderCorosyncConf(spec));
  FERRY_RETURN_IF_ERROR(ha::WriteCorosyncAuthkey(authkey()));
  return ha::WriteCorosyncConf(corosync_conf(), conf.text);
}

std::vector<std::string> TestCluster::CorosyncCommand(int i) const {
  const std::string d = host_dir(i);
  // `ip netns exec`, unshare and sh all exec: the PID we hold is corosync's own. unshare makes
  // the mount namespace private, so the bind mounts never reach the root namespace.
  const std::string script = "mount --bind " + d + "/lib /var/lib/corosync && mount --bind " + d +
                             "/run /run && exec corosync -f -c " + corosync_conf();
  return In(i, {"unshare", "-m", "sh", "-c", script});
}

Status TestCluster::StartCorosync(int i) {
  if (corosync_[i]) return Internal("host " + std::to_string(i) + "'s corosync is already running");
  auto p = std::make_unique<Process>(CorosyncCommand(i), host_dir(i) + "/corosync-" + std::to_string(starts_++));
  if (p->pid() <= 0) return Internal("cannot spawn corosync for host " + std::to_string(i));
  corosync_[i] = std::move(p);
  return Status::Ok();
}

Status TestCluster::KillCorosync(int i) {
  if (!corosync_[i]) return Internal("host " + std::to_string(i) + "'s corosync is not running");
  corosync_[i]->Signal(SIGKILL);
  corosync_[i]->Wait(10000);
  last_log_[i] = corosync_[i]->Stderr();
  corosync_[i].reset();
  return Status::Ok();
}

Status TestCluster::RestartCorosync(int i) {
  // A drill may have killed this corosync from outside (it kills every process in the host's
  // namespace): we are still its parent, so reap it before starting the next one.
  if (corosync_[i]) FERRY_RETURN_IF_ERROR(KillCorosync(i));
  return StartCorosync(i);
}

bool TestCluster::Quorate(int i, int members) const {
  CommandResult r = RunCommand(In(i, {"corosync-quorumtool", "-s"}), host_dir(i) + "/quorumtool", 5000);
  if (r.code != 0) return false;  // not quorate (or corosync not up yet)
  if (Field(r.out, "Quorate") != "Yes") return false;
  return members < 0 || Field(r.out, "Total votes") == std::to_string(members);
}

Status TestCluster::WaitQuorate(int i, bool expected, int timeout_ms) {
  if (WaitUntil([&] { return Quorate(i) == expected; }, timeout_ms)) return Status::Ok();
  return Timeout("host " + std::to_string(i) + " did not become " + (expected ? "quorate" : "inquorate") +
                 " within " + std::to_string(timeout_ms) + " ms");
}

std::string TestCluster::WriteHaConfig(int vms) const {
  using nlohmann::json;
  json hosts = json::array();
  for (int i = 0; i < size(); ++i) {
    hosts.push_back({{"name", "h" + std::to_string(i)}, {"nodeid", nodeid(i)}, {"address", address(i)},
                     {"dir", host_dir(i)}, {"guest_bridge", TestHosts::kGuestBridge}, {"netns", netns(i)},
                     {"uplink", hosts_->uplink(i)}, {"corosync_start", CorosyncCommand(i)}});
  }
  json list = json::array();
  for (int k = 0; k < vms; ++k) {
    std::string ip = TestHosts::guest_address(k);
    list.push_back({{"name", "kv" + std::to_string(k)}, {"guest", GuestPath("kvstore")}, {"mem", "64M"},
                    {"disk_bytes", 4 << 20}, {"net", true}, {"guest_args", {"ip=" + ip, "keys=128"}},
                    {"primary", "h0"}, {"backup", k == 0 ? "h1" : "h2"}, {"port", 7100 + k}, {"service", ip + ":7000"}});
  }
  std::string key = dir_.File("ha.key");
  std::ofstream(key) << "ferry-test-cluster-replication-key";
  ::chmod(key.c_str(), 0600);
  json cfg = {{"name", "test"}, {"key_file", key}, {"interval_ms", 25}, {"io_timeout_ms", 1000},
              {"client_netns", hosts_->client_netns()}, {"hosts", hosts}, {"vms", list}};
  std::string path = dir_.File("ha.json");
  std::ofstream(path) << cfg.dump(2);
  return path;
}

Result<std::string> TestCluster::Cmap(int i, const std::string& key) const {
  CommandResult r = RunCommand(In(i, {"corosync-cmapctl", "-g", key}), host_dir(i) + "/cmapctl", 5000);
  // "totem.crypto_cipher (str) = aes256"
  const size_t eq = r.out.find(" = ");
  if (r.code != 0 || eq == std::string::npos) {
    return NotFound("corosync-cmapctl -g " + key + " on host " + std::to_string(i) + " failed (exit " +
                    std::to_string(r.code) + "): " + r.out + r.err);
  }
  std::string value = r.out.substr(eq + 3);
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  return value;
}

std::string TestCluster::Log(int i) const { return corosync_[i] ? corosync_[i]->Stderr() : last_log_[i]; }

}  // namespace ferry::e2e
