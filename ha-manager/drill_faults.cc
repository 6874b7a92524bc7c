// The faults a drill injects, one function each, and what heals them. Processes are found by
// PID (an agent's or a VMM's own status says it, or `ip netns pids` for a whole host);
// links are cut with `ip link`; one path (a port) with a policy-routing blackhole inside the
// host's namespace, so nothing else on that host is touched.
#include "drill_faults.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "ferry/ha/subprocess.h"
#include "ferry/vmhost/api_client.h"

namespace ferry::ha {

using nlohmann::json;

namespace {

constexpr int kCutTable = 100;  // the routing table that holds the drills' blackhole

Result<pid_t> PidOf(const std::string& socket, const std::string& what) {
  auto st = vmhost::CallApi(socket, {{"op", "status"}}, 2000);
  if (!st.ok()) return Status(st.status().code(), "cannot reach " + what + ": " + st.status().message());
  auto p = st->find("pid");
  if (p == st->end() || !p->is_number_integer() || p->get<int64_t>() <= 1) return Corrupt(what + " reported no pid");
  return static_cast<pid_t>(p->get<int64_t>());
}

Status Run(std::vector<std::string> argv) {
  std::string joined;
  for (const auto& a : argv) joined += (joined.empty() ? "" : " ") + a;
  int rc = RunQuiet(std::move(argv));
  return rc == 0 ? Status::Ok() : Status(ErrorCode::kIo, "`" + joined + "` failed (exit " + std::to_string(rc) + ")");
}

Status NeedNetns(const HostConfig& h) {
  if (h.netns.empty() || h.uplink.empty()) {
    return InvalidArgument("host " + h.name + " has no netns/uplink in the config: host faults are for test clusters");
  }
  return Status::Ok();
}

std::vector<std::string> RuleArgs(const HostConfig& h, const char* verb, const std::string& proto, uint16_t port,
                                  const std::string& to) {
  std::vector<std::string> args = {"ip", "netns", "exec", h.netns, "ip", "rule", verb, "priority", std::to_string(kCutTable)};
  if (!to.empty()) args.insert(args.end(), {"to", to + "/32"});
  args.insert(args.end(), {"ipproto", proto, "dport", std::to_string(port), "table", std::to_string(kCutTable)});
  return args;
}

}  // namespace

Result<pid_t> AgentPid(const HostConfig& h) { return PidOf(h.dir + "/agent.sock", "host " + h.name + "'s agent"); }

Result<pid_t> VmmPid(const HostConfig& h, const std::string& vm) {
  return PidOf(h.dir + "/" + vm + ".sock", vm + "'s VMM on " + h.name);
}

Status KillHost(const HostConfig& h) {
  FERRY_RETURN_IF_ERROR(NeedNetns(h));
  std::string pids;
  if (RunQuiet({"ip", "netns", "pids", h.netns}, &pids) != 0) return Status(ErrorCode::kIo, "cannot list " + h.netns + "'s processes");
  std::istringstream ps(pids);
  for (pid_t p; ps >> p;) {
    if (p > 1 && p != ::getpid()) ::kill(p, SIGKILL);
  }
  return LinkDown(h);
}

Status LinkDown(const HostConfig& h) {
  FERRY_RETURN_IF_ERROR(NeedNetns(h));
  return Run({"ip", "link", "set", h.uplink, "down"});
}

Status LinkUp(const HostConfig& h) { return Run({"ip", "link", "set", h.uplink, "up"}); }

Status CutPort(const HostConfig& h, const std::string& proto, uint16_t port, const std::string& to) {
  FERRY_RETURN_IF_ERROR(NeedNetns(h));
  // A policy rule unmerges the namespace's local and main tables for good: lo's 127.0.0.0/8
  // (local table, looked up first) would then claim every other host's 127.x address and cut
  // them all, Corosync included. Test clusters are made without it; a namespace that still has
  // it loses it here (127.0.0.1 keeps its own route).
  (void)RunQuiet({"ip", "netns", "exec", h.netns, "ip", "route", "del", "127.0.0.0/8", "table", "local"});
  // Packets to that port leave by the rule's table, which holds only a blackhole: sends and
  // connects to every other host fail; the host's own (local table, looked up first) do not.
  FERRY_RETURN_IF_ERROR(Run({"ip", "netns", "exec", h.netns, "ip", "route", "replace", "blackhole", "127.0.0.0/8", "table",
                             std::to_string(kCutTable)}));
  return Run(RuleArgs(h, "add", proto, port, to));
}

Status HealPort(const HostConfig& h, const std::string& proto, uint16_t port, const std::string& to) {
  return Run(RuleArgs(h, "del", proto, port, to));
}

Result<pid_t> CorosyncPid(const HostConfig& h) {
  FERRY_RETURN_IF_ERROR(NeedNetns(h));
  std::string pids;
  if (RunQuiet({"ip", "netns", "pids", h.netns}, &pids) != 0) return Status(ErrorCode::kIo, "cannot list " + h.netns + "'s processes");
  std::istringstream ps(pids);
  for (pid_t p; ps >> p;) {
    std::ifstream comm("/proc/" + std::to_string(p) + "/comm");
    std::string name;
    if (std::getline(comm, name) && name == "corosync") return p;
  }
  return NotFound("no corosync runs in " + h.netns + " (host " + h.name + ")");
}

Status StartCorosync(const HostConfig& h) {
  if (h.corosync_start.empty()) return InvalidArgument("host " + h.name + " has no corosync_start command in the config");
  const std::string log = h.dir + "/corosync-start.log";
  std::vector<char*> argv;
  for (const auto& a : h.corosync_start) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // What a command that cannot run leaves in its log, built before the fork (the child only
  // writes it, and the error number).
  const std::string cannot_run = "ferry: cannot run " + h.corosync_start[0] + " (errno ";
  // Twice forked: the command's process is nobody's child here, so none is left unreaped.
  const pid_t child = ::fork();
  if (child < 0) return ErrnoError("fork");
  if (child == 0) {
    if (::fork() != 0) ::_exit(0);
    ::setsid();
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (null >= 0) ::dup2(null, 0);
    ::execvp(argv[0], argv.data());
    char digits[16];
    int n = 0;
    for (int e = errno; n == 0 || e > 0; e /= 10) digits[n++] = static_cast<char>('0' + e % 10);
    (void)!::write(2, cannot_run.data(), cannot_run.size());
    while (n > 0) (void)!::write(2, &digits[--n], 1);
    (void)!::write(2, ")\n", 2);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return Status::Ok();
}

Status Signal(pid_t pid, int sig) {
  if (::kill(pid, sig) != 0) return ErrnoError("kill " + std::to_string(pid));
  return Status::Ok();
}

}  // namespace ferry::ha
