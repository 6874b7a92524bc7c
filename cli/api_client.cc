#include "api_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ferry/base/clock.h"
#include "ferry/base/unique_fd.h"

namespace ferry::cli {

// Plain sockets with poll() deadlines: a client needs no event loop, and a hung VMM must not
// hang the CLI.
Result<nlohmann::json> CallApi(const std::string& socket_path, const nlohmann::json& request, int timeout_ms) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) return InvalidArgument("--api path is too long");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status(ErrorCode::kNotFound, "no VMM is listening on " + socket_path + " (is the VM running?)");
    }
    return ErrnoError("connect " + socket_path, err);
  }
  std::string out = request.dump() + "\n";
  if (::send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
    return ErrnoError("send to " + socket_path);
  }
  std::string in;
  uint64_t deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    uint64_t now = MonotonicNs();
    if (now >= deadline) return Timeout("the VMM at " + socket_path + " did not answer within " + std::to_string(timeout_ms) + " ms");
    pollfd p{fd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>((deadline - now) / 1000000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoError("poll");
    if (r == 0) continue;
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status(ErrorCode::kIo, "the VMM at " + socket_path + " closed the connection");
    in.append(buf, n);
    if (in.size() > (8u << 20)) return Corrupt("oversized API response");
  }
  auto response = nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
  if (response.is_discarded() || !response.is_object()) return Corrupt("the VMM sent a malformed response");
  if (!response.value("ok", false)) {
    return Status(ErrorCode::kAborted, response.value("error", std::string("request failed")));
  }
  return response;
}

}  // namespace ferry::cli
