#include "test_hosts.h"


#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace ferry::e2e {
namespace {

// Runs a command (no shell), bounded by `timeout 10`; returns its exit status.
int Run(std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"timeout", "10"});
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) {
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Status Check(std::vector<std::string> argv) {
  std::string text;
  for (auto& a : argv) text += a + " ";
  if (int rc = Run(argv); rc != 0) return Internal("`" + text + "` failed (exit " + std::to_string(rc) + ")");
  return Status::Ok();
}

}  // namespace

Status TestHosts::AddNamespace(const std::string& ns, const std::string& veth, const std::string& address,
                               bool guest_bridge) {
  FERRY_RETURN_IF_ERROR(Check({"ip", "netns", "add", ns}));
  FERRY_RETURN_IF_ERROR(Check({"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns}));
  FERRY_RETURN_IF_ERROR(Check({"ip", "link", "set", veth, "master", bridge_, "up"}));
  auto in = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
    return Check(argv);
  };
  FERRY_RETURN_IF_ERROR(in({"ip", "link", "set", "lo", "up"}));
  std::string dev = "eth0";
  if (guest_bridge) {
    dev = kGuestBridge;
    // A fixed MAC: otherwise the bridge takes its ports' lowest, which changes when a VMM's
    // TAP comes or goes, and the neighbours' ARP entries for the host go stale.
    std::string last = address.substr(address.rfind('.') + 1);
    char mac[18];
    std::snprintf(mac, sizeof mac, "02:fb:00:00:00:%02x", std::stoi(last) & 0xff);
    FERRY_RETURN_IF_ERROR(in({"ip", "link", "add", dev, "address", mac, "type", "bridge"}));
    FERRY_RETURN_IF_ERROR(in({"ip", "link", "set", "eth0", "master", dev}));
    FERRY_RETURN_IF_ERROR(in({"ip", "link", "set", dev, "up"}));
  }
  FERRY_RETURN_IF_ERROR(in({"ip", "addr", "add", address + "/24", "dev", dev}));
  FERRY_RETURN_IF_ERROR(in({"ip", "link", "set", "eth0", "up"}));
  // lo's 127.0.0.0/8 in the local table must go (127.0.0.1 stays): while a namespace has no
  // policy rule of its own the kernel merges its local and main tables and our /24 wins, but
  // the first rule (a drill's cut of one port) unmerges them for good, and from then on every
  // 127.x address is this host's: all traffic to the others (Corosync's too) stayed on lo.
  FERRY_RETURN_IF_ERROR(in({"ip", "route", "del", "127.0.0.0/8", "table", "local"}));
  // 127.x packets off the loopback interface are martians unless route_localnet is set.
  return in({"sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf." + dev + ".route_localnet=1"});
}

Result<std::unique_ptr<TestHosts>> TestHosts::Create(int hosts, Options options) {
  if (geteuid() != 0) return Unsupported("test hosts need root (network namespaces)");
  if (Run({"ip", "-V"}) != 0) return Unsupported("test hosts need iproute2 (`ip`)");
  std::unique_ptr<TestHosts> t(new TestHosts());
  // PID plus a per-process counter: a namespace's links vanish asynchronously after its
  // deletion, so a second topology in the same process must not reuse the names.
  static std::atomic<int> instance{0};
  std::string tag = std::to_string(getpid() % 1000000) + static_cast<char>('a' + instance++ % 26);
  t->bridge_ = "fbr" + tag;
  FERRY_RETURN_IF_ERROR(Check({"ip", "link", "add", t->bridge_, "type", "bridge"}));
  FERRY_RETURN_IF_ERROR(Check({"ip", "link", "set", t->bridge_, "up"}));
  for (int i = 0; i < hosts; ++i) {
    std::string ns = "fh" + tag + "-" + std::to_string(i), veth = "fv" + tag + "-" + std::to_string(i);
    t->netns_.push_back(ns);
    t->veth_.push_back(veth);
    FERRY_RETURN_IF_ERROR(t->AddNamespace(ns, veth, t->address(i), options.guest_network));
  }
  if (options.guest_network) {
    t->client_ns_ = "fh" + tag + "-c";
    FERRY_RETURN_IF_ERROR(t->AddNamespace(t->client_ns_, "fv" + tag + "-c", client_address(), false));
  }
  return t;
}

TestHosts::~TestHosts() {
  for (auto& ns : netns_) Run({"ip", "netns", "del", ns});  // takes its veth pair along
  if (!client_ns_.empty()) Run({"ip", "netns", "del", client_ns_});
  if (!bridge_.empty()) Run({"ip", "link", "del", bridge_});
}

std::vector<std::string> TestHosts::In(int i, std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {"ip", "netns", "exec", netns_[i]});
  return argv;
}

std::vector<std::string> TestHosts::InClient(std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {"ip", "netns", "exec", client_ns_});
  return argv;
}

Status TestHosts::SetLink(int i, bool up) { return Check({"ip", "link", "set", veth_[i], up ? "up" : "down"}); }

}  // namespace ferry::e2e
