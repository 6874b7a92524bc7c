// TCP connections on Boost.Asio. Each connection owns a private io_context and runs every
// operation asynchronously with run_for(deadline): Asio's documented way to give blocking I/O
// a timeout (a socket timeout option would leave Asio's synchronous calls polling forever).
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>

#include "ferry/migrate/transport.h"

namespace ferry::migrate {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

Status IoError(const std::string& what, const boost::system::error_code& ec) {
  if (ec == asio::error::eof) return Status(ErrorCode::kIo, what + ": the peer closed the connection");
  if (ec == asio::error::operation_aborted) return Status(ErrorCode::kAborted, what + ": cancelled");
  return Status(ErrorCode::kIo, what + ": " + ec.message());
}

// A peer is "loopback" only if it is this host: a 127/8 (or ::1) address on this network
// namespace's loopback interface, or one of its own addresses. 127.x addresses on a test network's veth belong
// to other namespaces and do not count.
bool IsLocalLoopback(const asio::ip::address& peer) {
  asio::ip::address a = peer;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  if (!a.is_loopback()) return false;
  if (a.is_v6()) return true;  // ::1 is only ever lo
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return false;
  const uint32_t peer_v4 = a.to_v4().to_uint();
  bool ours = false, on_lo_subnet = false, on_other_subnet = false;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    uint32_t addr = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    uint32_t mask = i->ifa_netmask ? ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr) : ~0u;
    ours |= peer_v4 == addr;
    bool in_subnet = (peer_v4 & mask) == (addr & mask);
    if (i->ifa_flags & IFF_LOOPBACK) {
      on_lo_subnet |= in_subnet;
    } else {
      on_other_subnet |= in_subnet;
    }
  }
  // 127.0.0.5 is this host (lo's 127/8); 127.31.0.1 next to our 127.31.0.2/24 on a veth is not.
  bool local = ours || (on_lo_subnet && !on_other_subnet);
  ::freeifaddrs(list);
  return local;
}

// Runs `io` until `done` or the deadline (0: none); on the deadline cancels the operation
// pending on `object` (a socket or an acceptor) and drains it.
template <typename Cancellable>
bool RunUntil(asio::io_context& io, const bool& done, uint64_t timeout_ms, Cancellable& object) {
  io.restart();
  if (timeout_ms == 0) {
    while (!done && io.run_one() > 0) {}
  } else {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!done && io.run_one_until(deadline) > 0) {}
  }
  if (done) return true;
  boost::system::error_code ignored;
  object.cancel(ignored);
  io.restart();
  io.run();
  return false;
}

class TcpConnection final : public Connection {
 public:
  TcpConnection(std::unique_ptr<asio::io_context> io, tcp::socket socket)
      : io_(std::move(io)), socket_(std::move(socket)) {
    boost::system::error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
    // Page batches are large; bigger kernel buffers keep several in flight per stream.
    socket_.set_option(asio::socket_base::send_buffer_size(4 << 20), ec);
    socket_.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) {
      peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
      loopback_ = IsLocalLoopback(ep.address());
    }
  }
  ~TcpConnection() override { Close(); }

  Status Write(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t timeout_ms) override {
    if (closed_) return Status(ErrorCode::kAborted, "connection to " + peer_ + " is closed");
    std::array<asio::const_buffer, 2> bufs{asio::buffer(a.data(), a.size()), asio::buffer(b.data(), b.size())};
    bool done = false;
    boost::system::error_code ec;
    asio::async_write(socket_, bufs, [&](const boost::system::error_code& e, size_t) { ec = e; done = true; });
    if (!RunUntil(*io_, done, timeout_ms, socket_)) {
      return Timeout("send to " + peer_ + ": the peer accepted no data for " + std::to_string(timeout_ms) + " ms");
    }
    if (ec) return IoError("send to " + peer_, ec);
    return Status::Ok();
  }

  Status Read(std::span<uint8_t> out, uint64_t timeout_ms) override {
    if (closed_) return Status(ErrorCode::kAborted, "connection to " + peer_ + " is closed");
    bool done = false;
    boost::system::error_code ec;
    size_t got = 0;
    asio::async_read(socket_, asio::buffer(out.data(), out.size()), [&](const boost::system::error_code& e, size_t n) {
      ec = e;
      got = n;
      done = true;
    });
    if (!RunUntil(*io_, done, timeout_ms, socket_)) {
      return Timeout("receive from " + peer_ + ": nothing arrived for " + std::to_string(timeout_ms) + " ms");
    }
    if (ec == asio::error::eof && got > 0) {
      return Status(ErrorCode::kIo, "receive from " + peer_ + ": the stream ended " + std::to_string(out.size() - got) +
                                        " bytes short (truncated)");
    }
    if (ec) return IoError("receive from " + peer_, ec);
    return Status::Ok();
  }

  Result<size_t> ReadSome(std::span<uint8_t> out, uint64_t timeout_ms) override {
    if (closed_) return Status(ErrorCode::kAborted, "connection to " + peer_ + " is closed");
    bool done = false;
    boost::system::error_code ec;
    size_t got = 0;
    socket_.async_read_some(asio::buffer(out.data(), out.size()), [&](const boost::system::error_code& e, size_t n) {
      ec = e;
      got = n;
      done = true;
    });
    if (!RunUntil(*io_, done, timeout_ms, socket_)) {
      return Timeout("receive from " + peer_ + ": nothing arrived for " + std::to_string(timeout_ms) + " ms");
    }
    if (ec == asio::error::eof) return Status(ErrorCode::kIo, "receive from " + peer_ + ": the peer closed the connection");
    if (ec) return IoError("receive from " + peer_, ec);
    return got;
  }

  void Close() override {
    if (closed_.exchange(true)) return;
    // shutdown(2) from any thread wakes an operation blocked in another; the socket itself is
    // closed by its owner in the destructor.
    ::shutdown(socket_.native_handle(), SHUT_RDWR);
  }

  std::string PeerAddress() const override { return peer_; }
  bool PeerIsLoopback() const override { return loopback_; }

 private:
  std::unique_ptr<asio::io_context> io_;
  tcp::socket socket_;
  std::atomic<bool> closed_{false};
  std::string peer_ = "?";
  bool loopback_ = false;
};

class TcpListener final : public Listener {
 public:
  explicit TcpListener(tcp::acceptor acceptor, std::unique_ptr<asio::io_context> io)
      : io_(std::move(io)), acceptor_(std::move(acceptor)) {}
  ~TcpListener() override { Close(); }

  Result<std::unique_ptr<Connection>> Accept(uint64_t timeout_ms) override {
    auto io = std::make_unique<asio::io_context>();
    tcp::socket socket(*io);
    bool done = false;
    boost::system::error_code ec;
    acceptor_.async_accept(socket, [&](const boost::system::error_code& e) { ec = e; done = true; });
    // A connection accepted just as the deadline passed is still returned: dropping it would
    // reset a peer that did connect in time.
    if (!RunUntil(*io_, done, timeout_ms, acceptor_) && !(done && !ec)) {
      if (!ec || ec == asio::error::operation_aborted) {
        return closed_ ? Status(ErrorCode::kAborted, "listener closed")
                       : Timeout("no peer connected within " + std::to_string(timeout_ms) + " ms");
      }
    }
    if (ec) return closed_ ? Status(ErrorCode::kAborted, "listener closed") : IoError("accept", ec);
    // The socket was created on its own io_context, so each connection runs independently.
    return std::unique_ptr<Connection>(new TcpConnection(std::move(io), std::move(socket)));
  }

  std::string LocalAddress() const override {
    boost::system::error_code ec;
    auto ep = acceptor_.local_endpoint(ec);
    if (ec) return "?";
    std::string host = ep.address().to_string();
    if (ep.address().is_v6()) host = "[" + host + "]";
    return host + ":" + std::to_string(ep.port());
  }

  void Close() override {
    if (closed_.exchange(true)) return;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    boost::asio::post(*io_, [] {});  // wake a run_one() that waits without a deadline
  }

 private:
  std::unique_ptr<asio::io_context> io_;
  tcp::acceptor acceptor_;
  std::atomic<bool> closed_{false};
};

}  // namespace

Result<Endpoint> ParseEndpoint(const std::string& text) {
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return InvalidArgument("'" + text + "' is not HOST:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return InvalidArgument("'" + text + "' is not HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("'" + host + "' is not a numeric IP address");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    return InvalidArgument("'" + port + "' is not a port number");
  }
  return Endpoint{host, static_cast<uint16_t>(std::stoul(port))};
}

Result<std::unique_ptr<Listener>> ListenTcp(const Endpoint& at) {
  auto io = std::make_unique<asio::io_context>();
  boost::system::error_code ec;
  tcp::endpoint ep(asio::ip::make_address(at.host, ec), at.port);
  if (ec) return InvalidArgument("bad listen address " + at.host);
  tcp::acceptor acceptor(*io);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(ec == asio::error::address_in_use ? ErrorCode::kBusy : ErrorCode::kIo,
                  "listen on " + at.host + ":" + std::to_string(at.port) + ": " + ec.message());
  }
  return std::unique_ptr<Listener>(new TcpListener(std::move(acceptor), std::move(io)));
}

Result<std::unique_ptr<Connection>> ConnectTcp(const Endpoint& to, uint64_t timeout_ms) {
  auto io = std::make_unique<asio::io_context>();
  boost::system::error_code ec;
  tcp::endpoint ep(asio::ip::make_address(to.host, ec), to.port);
  if (ec) return InvalidArgument("bad address " + to.host);
  tcp::socket socket(*io);
  bool done = false;
  socket.async_connect(ep, [&](const boost::system::error_code& e) { ec = e; done = true; });
  std::string where = to.host + ":" + std::to_string(to.port);
  if (!RunUntil(*io, done, timeout_ms, socket)) return Timeout("connect to " + where + ": no answer");
  if (ec == asio::error::connection_refused) {
    return Status(ErrorCode::kIo, "connect to " + where + ": connection refused (is `ferry incoming` listening?)");
  }
  if (ec) return IoError("connect to " + where, ec);
  return std::unique_ptr<Connection>(new TcpConnection(std::move(io), std::move(socket)));
}

}  // namespace ferry::migrate
