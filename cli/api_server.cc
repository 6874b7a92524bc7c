#include "api_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include "ferry/base/log.h"

namespace ferry::cli {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;

namespace {
constexpr size_t kMaxRequest = 1 << 20;
}

ApiServer::ApiServer(std::string path, ApiHandler handler)
    : path_(std::move(path)), handler_(std::move(handler)), acceptor_(io_) {}

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& path, ApiHandler handler) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) return InvalidArgument("--api path is too long for a unix socket");
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Busy("--api " + path + " exists and is not a socket");
    asio::io_context probe_io;
    Local::socket s(probe_io);
    boost::system::error_code ec;
    s.connect(Local::endpoint(path), ec);
    if (!ec) return Busy("--api " + path + " is in use by another running VMM");
    ::unlink(path.c_str());  // stale socket from a VMM that died
  }
  std::unique_ptr<ApiServer> server(new ApiServer(path, std::move(handler)));
  boost::system::error_code ec;
  server->acceptor_.open(Local(), ec);
  if (!ec) server->acceptor_.bind(Local::endpoint(path), ec);
  if (!ec) server->acceptor_.listen(16, ec);
  if (ec) return Status(ErrorCode::kIo, "--api " + path + ": " + ec.message());
  ::chmod(path.c_str(), 0600);  // the API controls the VM: owner only
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::Stop() {
  if (stopping_.exchange(true)) return;
  boost::system::error_code ec;
  // Closing a socket does not wake a thread blocked in accept(2); shutting it down does.
  if (acceptor_.is_open()) ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  acceptor_.close(ec);
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    // Only the read side: a connection waiting for its next request wakes and ends, while a
    // reply still being computed (e.g. the snapshot that stopped this VM) is still delivered.
    for (auto& w : sockets_) {
      if (auto s = w.lock()) s->shutdown(Local::socket::shutdown_receive, ec);
    }
    threads.swap(connection_threads_);
  }
  for (auto& t : threads) t.join();
  ::unlink(path_.c_str());
}

void ApiServer::AcceptLoop() {
  while (!stopping_) {
    auto socket = std::make_shared<Local::socket>(io_);
    boost::system::error_code ec;
    acceptor_.accept(*socket, ec);
    if (ec || stopping_) break;
    std::lock_guard lock(mu_);
    sockets_.push_back(socket);
    connection_threads_.emplace_back([this, socket] { Serve(socket); });
  }
}

void ApiServer::Serve(std::shared_ptr<Local::socket> socket) {
  asio::streambuf buf(kMaxRequest);
  for (;;) {
    boost::system::error_code ec;
    size_t n = asio::read_until(*socket, buf, '\n', ec);
    if (ec) return;  // peer closed, oversized line, or shutdown
    std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    buf.consume(n);
    nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    nlohmann::json response;
    std::mutex write_mu;
    auto emit = [&](const nlohmann::json& line) {
      std::string text = line.dump() + "\n";
      std::lock_guard lock(write_mu);
      boost::system::error_code ignored;  // a client that went away just misses progress
      asio::write(*socket, asio::buffer(text), ignored);
    };
    if (request.is_discarded() || !request.is_object()) {
      response = {{"ok", false}, {"error", "request is not a JSON object"}};
    } else {
      response = handler_(request, emit);
    }
    std::string out = response.dump() + "\n";
    std::lock_guard lock(write_mu);
    asio::write(*socket, asio::buffer(out), ec);
    if (ec) return;
  }
}

}  // namespace ferry::cli
