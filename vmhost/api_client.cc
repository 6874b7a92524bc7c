#include "ferry/vmhost/api_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/unique_fd.h"

namespace ferry::vmhost {

namespace {

Result<UniqueFd> Connect(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) return InvalidArgument("--api path is too long");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  // Non-blocking for the connect only: a blocking connect to a VMM that has stopped accepting
  // (hung, or SIGSTOPped) waits without a deadline once its listen backlog is full.
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoError("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status(ErrorCode::kNotFound, "no VMM is listening on " + socket_path + " (is the VM running?)");
    }
    if (err == EAGAIN) {
      return Timeout("the VMM at " + socket_path + " accepts no connection (its backlog is full: is it hung?)");
    }
    return ErrnoError("connect " + socket_path, err);
  }
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) return ErrnoError("fcntl");
  return fd;
}

// One request and its final response on a connected socket. Plain sockets with poll()
// deadlines: a client needs no event loop, and a hung VMM must not hang the CLI or the agent.
Result<nlohmann::json> Exchange(int fd, const std::string& socket_path, const nlohmann::json& request, int timeout_ms,
                                const ProgressLineFn& on_progress) {
  std::string out = request.dump() + "\n";
  // A server that refuses the connection (too many) may have answered and closed before the
  // request went out: read its answer anyway.
  Status sent = Status::Ok();
  if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
    sent = ErrnoError("send to " + socket_path);
    timeout_ms = std::min(timeout_ms, 1000);
  }
  std::string in;
  uint64_t deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
  char buf[4096];
  nlohmann::json response;
  for (;;) {
    size_t nl = in.find('\n');
    if (nl != std::string::npos) {
      response = nlohmann::json::parse(in.substr(0, nl), nullptr, false);
      in.erase(0, nl + 1);
      if (response.is_object() && response.contains("progress") && !response.contains("ok")) {
        if (on_progress) on_progress(response);
        deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
        continue;
      }
      if (!in.empty()) return Corrupt("the VMM sent more than one response");
      break;
    }
    uint64_t now = MonotonicNs();
    if (now >= deadline && !sent.ok()) return sent;
    if (now >= deadline) return Timeout("the VMM at " + socket_path + " did not answer within " + std::to_string(timeout_ms) + " ms");
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>((deadline - now) / 1000000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoError("poll");
    if (r == 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 && !sent.ok()) return sent;
    if (n <= 0) return Status(ErrorCode::kIo, "the VMM at " + socket_path + " closed the connection");
    in.append(buf, n);
    if (in.size() > (8u << 20)) return Corrupt("oversized API response");
  }
  return response;
}

// The final response's verdict: the response, or the VMM's error with its code.
Result<nlohmann::json> Verdict(nlohmann::json response) {
  if (response.is_discarded() || !response.is_object()) return Corrupt("the VMM sent a malformed response");
  auto ok = response.find("ok");
  if (ok == response.end() || !ok->is_boolean()) return Corrupt("the VMM sent a response without \"ok\"");
  if (!ok->get<bool>()) {
    ErrorCode code = ErrorCode::kAborted;
    if (auto c = response.find("code"); c != response.end() && c->is_string()) code = ParseErrorCode(c->get<std::string>());
    auto e = response.find("error");
    return Status(code, e != response.end() && e->is_string() ? e->get<std::string>() : "request failed");
  }
  return response;
}

}  // namespace

Result<nlohmann::json> CallApi(const std::string& socket_path, const nlohmann::json& request, int timeout_ms,
                               const ProgressLineFn& on_progress) {
  FERRY_ASSIGN_OR_RETURN(UniqueFd fd, Connect(socket_path));
  FERRY_ASSIGN_OR_RETURN(nlohmann::json response, Exchange(fd.get(), socket_path, request, timeout_ms, on_progress));
  return Verdict(std::move(response));
}

ApiConnection::~ApiConnection() = default;

void ApiConnection::Close() { fd_ = UniqueFd(); }

Result<nlohmann::json> ApiConnection::Call(const nlohmann::json& request, int timeout_ms) {
  if (!fd_.valid()) {
    FERRY_ASSIGN_OR_RETURN(fd_, Connect(path_));
    ++connects_;
  }
  auto response = Exchange(fd_.get(), path_, request, timeout_ms, {});
  if (!response.ok()) {
    Close();
    return response.status();
  }
  return Verdict(std::move(*response));
}

namespace {

// A /proc entry's pid, or 0 if the name is not a number.
pid_t PidOf(const std::string& name) {
  if (name.empty() || name.size() > 9 || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) return 0;
  return static_cast<pid_t>(std::stol(name));
}

// The inode of the listening unix socket bound at `path`, in this network namespace
// (/proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; a listener's flags are
// __SO_ACCEPTCON's); 0 if none.
uint64_t ListeningInode(const std::string& path) {
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, path_here;
    uint64_t inode = 0;
    if (!(fields >> num >> refs >> protocol >> flags >> type >> state >> inode)) continue;
    std::getline(fields >> std::ws, path_here);
    if (path_here == path && flags == "00010000") return inode;
  }
  return 0;
}

// The processes holding socket `inode` open (/proc/PID/fd).
std::set<pid_t> HoldersOf(uint64_t inode) {
  const std::string want = "socket:[" + std::to_string(inode) + "]";
  std::set<pid_t> holders;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const pid_t pid = PidOf(proc.path().filename());
    if (pid <= 0) continue;
    std::error_code fd_ec;  // a process that ended meanwhile, or one not ours to read
    for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", fd_ec)) {
      std::error_code link_ec;
      if (std::filesystem::read_symlink(fd.path(), link_ec).string() == want) holders.insert(pid);
    }
  }
  return holders;
}

// The processes (this one aside) started to serve `path` as a VMM does: `run` or `standby`,
// then `--api PATH`, on their command line (/proc/PID/cmdline, which anyone may read).
std::set<pid_t> ServersByCommandLine(const std::string& path) {
  std::set<pid_t> servers;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const pid_t pid = PidOf(proc.path().filename());
    if (pid <= 0 || pid == ::getpid()) continue;
    std::ifstream in(proc.path() / "cmdline", std::ios::binary);
    bool serving = false;
    std::string previous;
    for (std::string arg; std::getline(in, arg, '\0'); previous = arg) {
      if (arg == "run" || arg == "standby") serving = true;
      if (serving && previous == "--api" && arg == path) servers.insert(pid);
    }
  }
  return servers;
}

// The listener of a socket whose backlog is full, by its inode: the one process holding it.
// A child the listener forks holds it too until its exec closes it, so several holders are
// looked at again twice, 20 ms apart, and only those holding it throughout count; a command
// line serving `path` decides between any left. Without the inode or its holders (a /proc
// that shows neither), the command line alone.
Result<pid_t> FullListenerPid(const std::string& path) {
  const uint64_t inode = ListeningInode(path);
  std::set<pid_t> holders = inode ? HoldersOf(inode) : std::set<pid_t>{};
  for (int look = 1; holders.size() > 1 && look < 3; ++look) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::set<pid_t> still;
    std::ranges::set_intersection(holders, HoldersOf(inode), std::inserter(still, still.end()));
    holders = std::move(still);
  }
  if (holders.size() == 1) return *holders.begin();
  const std::set<pid_t> servers = ServersByCommandLine(path);
  std::set<pid_t> candidates;
  if (holders.empty()) {
    candidates = servers;
  } else {
    std::ranges::set_intersection(holders, servers, std::inserter(candidates, candidates.end()));
  }
  if (candidates.size() == 1) return *candidates.begin();
  const std::string found = !inode ? "/proc/net/unix lists no socket listening on " + path
                            : holders.empty() ? "no process's /proc/PID/fd shows its socket:[" + std::to_string(inode) + "]"
                                              : std::to_string(holders.size()) + " processes hold the socket listening on " + path;
  return Status(ErrorCode::kNotFound, found + ", and " + std::to_string(servers.size()) +
                                          " processes were started with --api " + path + " (one was needed)");
}

}  // namespace

Result<pid_t> ListenerPid(const std::string& socket_path) {
  auto connected = Connect(socket_path);
  if (!connected.ok() && connected.status().code() == ErrorCode::kTimeout) {
    // Its backlog is full (it has accepted nothing for a while): no connection to ask its
    // peer credentials on.
    return FullListenerPid(socket_path);
  }
  FERRY_ASSIGN_OR_RETURN(UniqueFd fd, std::move(connected));
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return ErrnoError("SO_PEERCRED " + socket_path);
  return cred.pid;
}

Status ApiConnection::Send(const nlohmann::json& request) {
  in_.clear();
  if (!fd_.valid()) {
    FERRY_ASSIGN_OR_RETURN(fd_, Connect(path_));
    ++connects_;
  }
  const std::string out = request.dump() + "\n";
  // Whole or not at all: a socket buffer full of unread requests is a VMM not answering.
  if (::send(fd_.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(out.size())) {
    Status st = errno == EAGAIN ? Timeout("the VMM at " + path_ + " reads no requests") : ErrnoError("send to " + path_);
    Close();
    return st;
  }
  return Status::Ok();
}

std::optional<Result<nlohmann::json>> ApiConnection::Receive() {
  auto fail = [this](Status st) -> std::optional<Result<nlohmann::json>> {
    Close();
    return Result<nlohmann::json>(std::move(st));
  };
  char buf[4096];
  for (;;) {
    for (size_t nl; (nl = in_.find('\n')) != std::string::npos;) {
      nlohmann::json response = nlohmann::json::parse(in_.substr(0, nl), nullptr, false);
      in_.erase(0, nl + 1);
      if (response.is_object() && response.contains("progress") && !response.contains("ok")) continue;
      if (!in_.empty()) return fail(Corrupt("the VMM sent more than one response"));
      return Verdict(std::move(response));
    }
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return std::nullopt;
    if (n < 0) return fail(ErrnoError("recv from " + path_));
    if (n == 0) return fail(Status(ErrorCode::kIo, "the VMM at " + path_ + " closed the connection"));
    in_.append(buf, n);
    if (in_.size() > (8u << 20)) return fail(Corrupt("oversized API response"));
  }
}

}  // namespace ferry::vmhost
