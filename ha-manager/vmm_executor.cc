#include "ferry/ha/vmm_executor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <tuple>
#include <vector>

#include "ferry/base/clock.h"
#include "ferry/base/unique_fd.h"
#include "ferry/ha/subprocess.h"
#include "ferry/migrate/auth.h"
#include "ferry/vmhost/lifecycle.h"
#include "ferry/vmhost/requests.h"

namespace ferry::ha {

using nlohmann::json;

VmmExecutor::VmmExecutor(const ClusterConfig& config, const HostConfig& self, std::string exe)
    : config_(config), self_(self), exe_(std::move(exe)), sampler_(self) {}

VmmExecutor::~VmmExecutor() { KillAll(); }

std::string VmmExecutor::Sock(const std::string& vm) const { return self_.dir + "/" + vm + ".sock"; }
std::string VmmExecutor::LogPath(const std::string& vm) const { return self_.dir + "/" + vm + ".log"; }

Status VmmExecutor::Spawn(const VmSpec& v, Role role, uint64_t generation, std::vector<std::string> args) {
  // Everything the child needs is made before fork(): after it, only async-signal-safe calls.
  const std::string log = LogPath(v.name);
  args.insert(args.begin(), "ferry");
  ::unlink(Sock(v.name).c_str());
  const bool leased = config_.lease_ms > 0;
  if (leased) args.insert(args.begin() + 2, {"--lease-ms", std::to_string(config_.lease_ms)});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    if (leased) {
      ::setsid();  // outlives the agent; its lease fences it if no agent renews it
    } else {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    // No descriptor of the agent's leaks into a VMM: not its API socket, not Corosync's.
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(exe_.c_str(), argv.data());
    _exit(127);
  }
  std::lock_guard lock(mu_);
  Child& c = children_[v.name];
  c.pid = pid;
  c.role = role;
  c.generation = generation;
  c.api = std::make_unique<vmhost::ApiConnection>(Sock(v.name));
  c.answered_ms = MonotonicMs();  // silent from its start until it answers
  return Status::Ok();
}

Status VmmExecutor::StartPrimary(const VmSpec& v, uint64_t generation) {
  const std::string disk = self_.dir + "/" + v.name + ".img";
  if (v.disk_bytes) {
    struct stat sb {};
    if (::stat(disk.c_str(), &sb) != 0) {  // a new primary starts blank; an existing image is its disk
      int fd = ::open(disk.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      const bool ok = fd >= 0 && ::ftruncate(fd, static_cast<off_t>(v.disk_bytes)) == 0;
      if (fd >= 0) ::close(fd);
      if (!ok) return ErrnoError("cannot create the disk image " + disk);
    }
  }
  std::vector<std::string> args = {"run", v.guest, "--mem", v.mem, "--vcpus", std::to_string(v.vcpus), "--generation",
                                   std::to_string(generation), "--api", Sock(v.name)};
  if (v.disk_bytes) args.insert(args.end(), {"--disk", disk});
  if (v.net) args.insert(args.end(), {"--net", "fv" + std::to_string(v.port) + ",bridge=" + self_.guest_bridge});
  if (!v.guest_args.empty()) {
    args.push_back("--");
    args.insert(args.end(), v.guest_args.begin(), v.guest_args.end());
  }
  return Spawn(v, Role::kPrimary, generation, std::move(args));
}

Status VmmExecutor::StartStandby(const VmSpec& v, uint64_t generation, const std::string& primary) {
  const std::string disk = self_.dir + "/" + v.name + ".img";
  if (v.disk_bytes) {  // a standby's image is filled by the initial sync
    int fd = ::open(disk.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const bool ok = fd >= 0 && ::ftruncate(fd, static_cast<off_t>(v.disk_bytes)) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok) return ErrnoError("cannot create the disk image " + disk);
  }
  std::vector<std::string> args = {"standby", "--listen", self_.address + ":" + std::to_string(v.port), "--min-generation",
                                   std::to_string(generation), "--io-timeout-ms", std::to_string(config_.io_timeout_ms),
                                   "--api", Sock(v.name)};
  if (!config_.key_file.empty()) args.insert(args.end(), {"--key", config_.key_file});
  if (!config_.tls_cert.empty()) {
    args.insert(args.end(), {"--tls-cert", config_.TlsPath(config_.tls_cert, self_.name), "--tls-key",
                             config_.TlsPath(config_.tls_key, self_.name), "--tls-ca", config_.TlsPath(config_.tls_ca, self_.name)});
    // Only the owner may replicate to it: its certificate must name the owner's host, as the
    // config names it (as the primary's check of the standby does, Replicate below).
    if (!config_.Host(primary)) return InvalidArgument("standby for " + v.name + ": unknown primary host " + primary);
    args.insert(args.end(), {"--tls-peer-name", primary});
  }
  if (config_.insecure) args.push_back("--insecure");
  if (v.disk_bytes) args.insert(args.end(), {"--disk", disk});
  if (v.net) args.insert(args.end(), {"--net", "fv" + std::to_string(v.port) + ",bridge=" + self_.guest_bridge});
  return Spawn(v, Role::kStandby, generation, std::move(args));
}

void VmmExecutor::Kill(const std::string& vm) {
  std::lock_guard lock(mu_);
  auto it = children_.find(vm);
  if (it == children_.end()) return;
  if (it->second.pidfd >= 0) {
    (void)SignalPidfd(it->second.pidfd, SIGKILL);  // never a reused pid
  } else {
    ::kill(it->second.pid, SIGKILL);
  }
}

std::vector<Ended> VmmExecutor::Reap() {
  std::vector<Ended> out;
  std::lock_guard lock(mu_);
  for (auto it = children_.begin(); it != children_.end();) {
    int status = 0;
    std::string how;
    if (it->second.pidfd >= 0) {
      pollfd p{it->second.pidfd, POLLIN, 0};
      if (::poll(&p, 1, 0) == 1) how = "ended (adopted: no exit status)";
    } else if (waitpid(it->second.pid, &status, WNOHANG) == it->second.pid) {
      how = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status));
    }
    if (!how.empty()) {
      out.push_back({it->first, it->second.role, how});
      if (it->second.api) closed_connects_ += it->second.api->connects();
      if (it->second.pidfd >= 0) ::close(it->second.pidfd);
      told_.erase(it->first);
      it = children_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

void VmmExecutor::KillAll() {
  std::map<std::string, Child> all;
  {
    std::lock_guard lock(mu_);
    all.swap(children_);
  }
  for (auto& [vm, c] : all) ::kill(c.pid, SIGKILL);
  for (auto& [vm, c] : all) {
    if (c.pidfd < 0) {
      waitpid(c.pid, nullptr, 0);
      continue;
    }
    pollfd p{c.pidfd, POLLIN, 0};
    (void)::poll(&p, 1, 5000);
    ::close(c.pidfd);
  }
}

namespace {

// What a VMM was started as, from its command line (`ferry run ... --generation N`, `ferry
// standby ... --min-generation N`): all an agent knows of one that never answered it.
std::pair<Role, uint64_t> StartedAs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
  Role role = Role::kPrimary;
  uint64_t generation = 0;
  for (size_t k = 0; k + 1 < args.size(); ++k) {
    if (args[k] == "standby") role = Role::kStandby;
    if (args[k] == "--generation" || args[k] == "--min-generation") generation = std::strtoull(args[k + 1].c_str(), nullptr, 10);
  }
  return {role, generation};
}

}  // namespace

// With a lease, a VMM outlives a crashed agent: the next one finds it by its socket, asks it
// its pid, role and generation, and watches it through a pidfd (it is not our child).
std::vector<std::string> VmmExecutor::Adopt() {
  std::vector<std::string> out;
  if (config_.lease_ms == 0) return out;
  for (const auto& v : config_.vms) {
    {
      std::lock_guard lock(mu_);
      if (children_.count(v.name)) continue;
    }
    auto api = std::make_unique<vmhost::ApiConnection>(Sock(v.name));
    auto r = api->Call({{"op", "status"}}, 1000);
    std::optional<pid_t> pid;
    if (r.ok()) {
      auto p = r->find("pid");
      if (p != r->end() && p->is_number_integer() && p->get<int64_t>() > 1) pid = static_cast<pid_t>(p->get<int64_t>());
    } else if (r.status().code() != ErrorCode::kNotFound) {
      // Listening but not answering (hung, stopped): adopted all the same, found by the
      // socket's peer (its backlog full: by the socket's inode, vmhost::ListenerPid), and
      // reported as not answering, so the hung-VMM rule kills it after
      // hung_vmm_ms. Left out, it stayed an orphan holding its socket, TAP and port, and its
      // host could not take the VM again.
      if (auto listener = vmhost::ListenerPid(Sock(v.name)); listener.ok() && *listener > 1) pid = *listener;
    }
    if (!pid) continue;
    auto pidfd = OpenPidfd(*pid);
    if (!pidfd.ok()) continue;
    Child c;
    c.pid = *pid;
    c.pidfd = pidfd->Release();
    c.api = std::move(api);
    c.answered_ms = MonotonicMs();  // silent from its adoption, if it does not answer
    if (r.ok()) {
      Instance i = Parse(v.name, c, *r);
      c.role = i.role;
      c.generation = i.generation;
      c.last = i;
      c.answering = true;
    } else {
      std::tie(c.role, c.generation) = StartedAs(*pid);
    }
    std::lock_guard lock(mu_);
    children_[v.name] = std::move(c);
    out.push_back(v.name);
  }
  return out;
}

std::optional<pid_t> VmmExecutor::pid(const std::string& vm) const {
  std::lock_guard lock(mu_);
  auto it = children_.find(vm);
  if (it == children_.end()) return std::nullopt;
  return it->second.pid;
}

uint64_t VmmExecutor::probe_connects() const {
  std::lock_guard lock(mu_);
  uint64_t n = closed_connects_;
  for (const auto& [vm, c] : children_) n += c.api ? c.api->connects() : 0;
  return n;
}

// A child's status answer, read at the JSON edge into the lifecycle's and replication's
// enums. A field of the wrong type makes the whole answer count as no answer.
Instance VmmExecutor::Parse(const std::string& vm, const Child& child, const json& r) {
  Instance i;
  i.vm = vm;
  i.role = child.role;
  i.generation = child.generation;
  try {
    const json& rep = r.contains("replication") ? r["replication"] : json();
    const auto phase = vmhost::ParsePhase(r.value("state", ""));
    if (phase == vmhost::Phase::kStandby || phase == vmhost::Phase::kPromoting) {
      i.role = Role::kStandby;
      if (rep.is_object()) {
        i.standby_state = replication::ParseStandbyState(rep.value("state", ""));
        i.committed = rep.value("committed_epoch", uint64_t{0});
        if (!child.generation) i.generation = rep.value("generation", uint64_t{0});  // adopted
      }
      return i;
    }
    i.role = Role::kPrimary;
    i.phase = phase;
    if (r.contains("ha") && r["ha"].is_object()) {
      i.generation = r["ha"].value("generation", child.generation);
      i.fenced = r["ha"].value("fenced", false);
    }
    if (rep.is_object()) {
      i.replication = replication::ParseReplicationState(rep.value("state", ""));
      i.output_held = rep.value("output_held", false);
      i.epochs = rep.value("epochs", uint64_t{0});
      const std::string to = rep.value("standby", "");
      for (const auto& h : config_.hosts) {
        if (to.rfind(h.address + ":", 0) == 0) i.standby_host = h.name;
      }
    }
    if (r.contains("devices") && r["devices"].contains("nic") && r["devices"]["nic"].is_object()) {
      i.tx_frames = r["devices"]["nic"].value("tx_frames", uint64_t{0});
    }
  } catch (const json::exception&) {
    return NotAnswering(vm, child);
  }
  return i;
}

// A child that gave no usable answer: what it last said, but not answering. A promoted
// standby is a primary from then on, and a primary's generation grows (unprotected claims,
// hand-backs): reporting the role and generation it started with made a promoted primary
// whose probe timed out look like a standby of the previous generation (the others saw no
// primary and promoted their replica beside it: two copies), and an owner whose generation
// had grown saw its own primary as stale and killed it. Found by review, after stale reads
// under load in bench/ha-soak's first KVM hour.
Instance VmmExecutor::NotAnswering(const std::string& vm, const Child& child) {
  std::optional<std::pair<Role, uint64_t>> told;  // promoted, or given a generation, since its last answer
  {
    std::lock_guard lock(mu_);
    if (auto t = told_.find(vm); t != told_.end()) told.emplace(t->second.role, t->second.generation);
  }
  return Instance::NotAnswering(vm, child.last, child.role, child.generation, told);
}

void VmmExecutor::Ask(Child& c, Child::Asked what, uint64_t now_ms) {
  const json request = what == Child::Asked::kLease ? json{{"op", "lease"}, {"ttl_ms", config_.lease_ms}} : json{{"op", "status"}};
  if (c.api->Send(request).ok()) {
    c.asked = what;
    c.asked_ms = now_ms;
  } else {
    c.asked = Child::Asked::kNothing;
    c.answering = false;
  }
}

void VmmExecutor::Answered(const std::string& vm, Child& c, const Result<json>& r, bool renew, uint64_t now_ms) {
  const bool status = c.asked == Child::Asked::kStatus;
  const uint64_t asked_ms = c.asked_ms;
  c.asked = Child::Asked::kNothing;
  // Any reply on a connection still open, an error reply included, is a VMM alive (one whose
  // answers this agent cannot read, a version apart, is not hung); a transport failure closed it.
  if (c.api->connected()) c.answered_ms = now_ms;
  if (!r.ok()) {
    c.answering = false;
    return;
  }
  if (!status) return;  // the lease, renewed
  try {
    sampler_.Observe(vm, c.pid, r.value(), MonotonicMs());  // rates: a duration
  } catch (const json::exception&) {
  }
  Instance i = Parse(vm, c, r.value());
  if (!i.Answered()) {  // no usable answer
    c.answering = false;
    return;
  }
  bool stale = false;  // asked before a promotion or a new generation: it says what the VMM was
  {
    std::lock_guard lock(mu_);
    auto t = told_.find(vm);
    stale = t != told_.end() && t->second.at_ms >= asked_ms;
    if (!stale) told_.erase(vm);
  }
  if (!stale) {
    c.role = i.role;
    c.generation = i.generation;
    c.last = i;
    c.answering = true;
  }
  // The watchdog lease, renewed on the same connection: an agent that stops probing (dead,
  // hung, stopped) lets it run out and the VM fences itself.
  if (config_.lease_ms && renew) Ask(c, Child::Asked::kLease, now_ms);
}

std::vector<Instance> VmmExecutor::Probe(bool renew_leases) {
  std::vector<std::pair<std::string, Child*>> list;
  {
    std::lock_guard lock(mu_);
    for (auto& [vm, c] : children_) list.emplace_back(vm, &c);
  }
  // Children are erased only by Reap() and KillAll(), on this same thread: the pointers hold.
  const uint64_t start = MonotonicMs();
  for (auto& [vm, c] : list) {
    if (c->asked != Child::Asked::kNothing && start - c->asked_ms >= kProbeTimeoutMs) {
      c->api->Close();  // its late answer must never be read as the next question's
      c->asked = Child::Asked::kNothing;
      c->answering = false;
    }
    if (c->asked == Child::Asked::kNothing) Ask(*c, Child::Asked::kStatus, start);
  }
  // Answers (and lease renewals asked on the way) for up to kProbeWaitMs.
  std::vector<pollfd> fds;
  std::vector<std::pair<std::string, Child*>> out_now;
  for (;;) {
    fds.clear();
    out_now.clear();
    for (auto& [vm, c] : list) {
      if (c->asked == Child::Asked::kNothing) continue;
      fds.push_back({c->api->fd(), POLLIN, 0});
      out_now.emplace_back(vm, c);
    }
    const uint64_t now = MonotonicMs();
    if (fds.empty() || now - start >= kProbeWaitMs) break;
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(start + kProbeWaitMs - now));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      auto& [vm, c] = out_now[k];
      auto got = c->api->Receive();
      if (!got) continue;
      Answered(vm, *c, *got, renew_leases, MonotonicMs());
    }
  }
  std::vector<Instance> out;
  const uint64_t now = MonotonicMs();
  for (auto& [vm, c] : list) {
    // Answered now, or asked less than kProbeTimeoutMs ago and answering before: what it last
    // said (a blocking probe would still be waiting for it); else not answering.
    bool told;  // promoted, or given a generation, since that answer
    {
      std::lock_guard lock(mu_);
      told = told_.count(vm) > 0;
    }
    Instance i = c->answering && c->last && !told ? *c->last : NotAnswering(vm, *c);
    if (now - c->answered_ms > kProbeTimeoutMs) i.silent_ms = now - c->answered_ms;
    out.push_back(std::move(i));
  }
  sampler_.EndRound();
  for (const auto& entry : list) CapLog(entry.first);
  return out;
}

// Past vm_log_max_mb, a VMM's log keeps its last kLogTailKept bytes as VM.log.1 and starts
// again: the VMM appends (O_APPEND, Spawn), so it writes on at the new end. What it writes
// between the copy and the truncation (microseconds) is lost. Agent thread (Probe).
void VmmExecutor::CapLog(const std::string& vm) {
  const std::string log = LogPath(vm);
  struct stat st {};
  if (::stat(log.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) <= (config_.vm_log_max_mb << 20)) return;
  UniqueFd fd(::open(log.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  if (!fd.valid()) return;
  const off_t size = ::lseek(fd.get(), 0, SEEK_END);
  const off_t keep = std::min<off_t>(size, static_cast<off_t>(kLogTailKept));
  std::string tail(static_cast<size_t>(keep), '\0');
  const ssize_t got = keep > 0 ? ::pread(fd.get(), tail.data(), tail.size(), size - keep) : 0;
  if (got > 0) {
    UniqueFd old(::open((log + ".1").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (old.valid()) (void)!::write(old.get(), tail.data(), static_cast<size_t>(got));
  }
  if (::ftruncate(fd.get(), 0) != 0) return;
  const std::string line = "ferry ha agent: this log passed " + std::to_string(config_.vm_log_max_mb) + " MiB (" +
                           std::to_string(size) + " bytes); its last " + std::to_string(got > 0 ? got : 0) +
                           " bytes are in " + vm + ".log.1\n";
  (void)!::write(fd.get(), line.data(), line.size());
}

json VmmExecutor::Stats() { return sampler_.Stats(); }

Status VmmExecutor::Replicate(const VmSpec& v, const HostConfig& to, uint64_t generation) {
  json req = {{"op", "replicate"},
              {"to", to.address + ":" + std::to_string(v.port)},
              {"generation", generation},
              {"hold_on_failure", true},
              {"interval_ms", config_.interval_ms},
              {"io_timeout_ms", config_.io_timeout_ms},
              {"sync_bandwidth", v.sync_bandwidth},
              {"wait_ms", 60000}};
  migrate::Security security;
  if (!config_.key_file.empty()) {
    FERRY_ASSIGN_OR_RETURN(security.key, migrate::LoadKey(config_.key_file));
  }
  if (!config_.tls_cert.empty()) {
    // The standby's certificate must name its host, as the config names it.
    FERRY_ASSIGN_OR_RETURN(security.certs, migrate::LoadCertificates(config_.TlsPath(config_.tls_cert, self_.name),
                                                                     config_.TlsPath(config_.tls_key, self_.name),
                                                                     config_.TlsPath(config_.tls_ca, self_.name), to.name));
  }
  security.insecure = config_.insecure;
  vmhost::SecurityToRequest(security, &req);
  return vmhost::CallApi(Sock(v.name), req, 70000).status();
}

Status VmmExecutor::StopReplication(const std::string& vm, bool keep_standby) {
  return vmhost::CallApi(Sock(vm), {{"op", "replicate_stop"}, {"keep_standby", keep_standby}}, 10000).status();
}

Result<PromoteResult> VmmExecutor::Promote(const std::string& vm, uint64_t generation) {
  FERRY_ASSIGN_OR_RETURN(json r, vmhost::CallApi(Sock(vm), {{"op", "promote"}, {"force", true}, {"generation", generation}}, 30000));
  {
    std::lock_guard lock(mu_);
    told_[vm] = {Role::kPrimary, generation, MonotonicMs()};
  }
  PromoteResult out;
  if (r.contains("epoch") && r["epoch"].is_number_unsigned()) out.epoch = r["epoch"].get<uint64_t>();
  if (r.contains("promote_ms") && r["promote_ms"].is_number()) out.promote_ms = r["promote_ms"].get<double>();
  return out;
}

Result<HandoverResult> VmmExecutor::Handover(const std::string& vm, uint64_t generation) {
  FERRY_ASSIGN_OR_RETURN(json r, vmhost::CallApi(Sock(vm), {{"op", "handover"}, {"generation", generation}}, 30000));
  HandoverResult out;
  if (r.contains("downtime_ms") && r["downtime_ms"].is_number()) out.downtime_ms = r["downtime_ms"].get<double>();
  return out;
}

// How long a one-shot command (fence, unfence, release) waits for its answer, on the agent's
// thread: kCommandWaitMs from a VMM that answers its probes; from one whose probe question is
// out past a probe's wait, or that stopped answering (hung, stopped, overloaded), a probe's
// wait. The request waits in its socket all the same and is carried out if the VMM wakes (its
// server reads a request whose client has gone). Waiting 3 s each held the whole agent, its
// API and every other VMM's lease renewal: beside one hung VMM that was asked to unfence at
// every tick, leases of 1.5 s ran out on the healthy ones.
int VmmExecutor::CommandWaitMs(const std::string& vm) const {
  std::lock_guard lock(mu_);
  auto it = children_.find(vm);
  if (it == children_.end()) return kCommandWaitMs;
  const Child& c = it->second;
  const bool late = c.asked != Child::Asked::kNothing && MonotonicMs() - c.asked_ms > kProbeWaitMs;
  return c.answering && !late ? kCommandWaitMs : static_cast<int>(kProbeWaitMs);
}

Status VmmExecutor::Fence(const std::string& vm) {
  return vmhost::CallApi(Sock(vm), {{"op", "fence"}}, CommandWaitMs(vm)).status();
}
Status VmmExecutor::Unfence(const std::string& vm) {
  return vmhost::CallApi(Sock(vm), {{"op", "unfence"}}, CommandWaitMs(vm)).status();
}
Status VmmExecutor::ReleaseOutput(const std::string& vm, uint64_t generation) {
  const int wait_ms = CommandWaitMs(vm);
  FERRY_RETURN_IF_ERROR(vmhost::CallApi(Sock(vm), {{"op", "set_generation"}, {"generation", generation}}, wait_ms)
                            .status()
                            .Annotate("set_generation"));
  {
    std::lock_guard lock(mu_);
    told_[vm] = {Role::kPrimary, generation, MonotonicMs()};
  }
  return vmhost::CallApi(Sock(vm), {{"op", "release_output"}}, wait_ms).status();
}

}  // namespace ferry::ha
