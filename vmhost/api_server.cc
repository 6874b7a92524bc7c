#include "ferry/vmhost/api_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>

#include "ferry/base/log.h"

namespace ferry::vmhost {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;
using nlohmann::json;

namespace {
constexpr size_t kMaxRequest = 1 << 20;
constexpr size_t kMaxQueuedProgress = 1 << 20;

// What a guest wrote may reach a reply (its report, its console): invalid UTF-8 is replaced
// rather than thrown about.
std::string Line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"; }
}  // namespace

json ErrorReply(const Status& status) {
  return {{"ok", false}, {"error", status.message()}, {"code", ErrorCodeName(status.code())}};
}

// Everything below runs on the I/O thread unless it says otherwise.
class ApiServer::Impl {
 public:
  struct Conn {
    explicit Conn(asio::io_context& io) : socket(io), timer(io), buf(kMaxRequest) {}
    Local::socket socket;
    asio::steady_timer timer;  // the write in progress must finish before it fires
    asio::streambuf buf;
    struct Line {
      std::string text;
      bool reply;  // a reply, which Stop() waits for; else a progress line
    };
    std::deque<Line> out;
    size_t queued = 0;
    bool writing = false;
    bool read_done = false;  // the peer left (or Stop): close once the output is out
    bool closed = false;
  };
  using ConnPtr = std::shared_ptr<Conn>;

  Impl(std::string path, ApiHandler handler, ApiServerOptions o)
      : path_(std::move(path)), handler_(std::move(handler)), o_(o), acceptor_(io_), work_(io_.get_executor()),
        pool_(o.workers), status_pool_(2) {}

  Status Bind() {
    if (path_.size() >= sizeof(sockaddr_un::sun_path)) return InvalidArgument("--api path is too long for a unix socket");
    struct stat st;
    if (::lstat(path_.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return Busy("--api " + path_ + " exists and is not a socket");
      asio::io_context probe_io;
      Local::socket s(probe_io);
      boost::system::error_code ec;
      s.connect(Local::endpoint(path_), ec);
      if (!ec) return Busy("--api " + path_ + " is in use by another running VMM or agent");
      ::unlink(path_.c_str());  // stale socket from a process that died
    }
    boost::system::error_code ec;
    acceptor_.open(Local(), ec);
    if (!ec) acceptor_.bind(Local::endpoint(path_), ec);
    if (!ec) acceptor_.listen(64, ec);
    if (ec) return Status(ErrorCode::kIo, "--api " + path_ + ": " + ec.message());
    ::fcntl(acceptor_.native_handle(), F_SETFD, FD_CLOEXEC);
    ::chmod(path_.c_str(), 0600);  // the API controls the VM: owner only
    bound_ = true;
    Accept();
    thread_ = std::thread([this] {
      for (;;) {
        try {
          io_.run();
          return;
        } catch (const std::exception& e) {
          FERRY_LOG_ERROR("api server: %s", e.what());  // keep serving
        }
      }
    });
    return Status::Ok();
  }

  void Stop() {
    if (stopping_.exchange(true)) return;
    asio::post(io_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      // Only the read side: a reply still being computed (the snapshot that stopped this VM)
      // is still delivered.
      for (const auto& c : conns_) c->socket.shutdown(Local::socket::shutdown_receive, ec);
    });
    pool_.join();
    status_pool_.join();
    // Let the last replies go out, then close everything.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o_.write_timeout_ms);
    while (pending_writes_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    asio::post(io_, [this] {
      auto all = conns_;  // Close() erases from conns_
      for (const auto& c : all) Close(c);
      conns_.clear();
      work_.reset();
    });
    if (thread_.joinable()) thread_.join();
    io_.stop();
    if (bound_) ::unlink(path_.c_str());
  }

  ApiServerStats stats() const {
    std::lock_guard lock(stats_mu_);
    return stats_;
  }

  const std::string& path() const { return path_; }

 private:
  void Accept() {
    auto conn = std::make_shared<Conn>(io_);
    acceptor_.async_accept(conn->socket, [this, conn](boost::system::error_code ec) {
      if (ec || stopping_) return;
      ::fcntl(conn->socket.native_handle(), F_SETFD, FD_CLOEXEC);
      if (conns_.size() >= o_.max_connections) {
        Count([](ApiServerStats& s) { ++s.refused; });
        std::string line = Line(ErrorReply(Busy("too many API connections")));
        boost::system::error_code ignored;
        conn->socket.non_blocking(true, ignored);
        conn->socket.write_some(asio::buffer(line), ignored);  // best effort, never blocks
        conn->socket.close(ignored);
      } else {
        conns_.insert(conn);
        Count([this](ApiServerStats& s) {
          ++s.accepted;
          s.open = conns_.size();
        });
        Read(conn);
      }
      Accept();
    });
  }

  void Read(const ConnPtr& c) {
    asio::async_read_until(c->socket, c->buf, '\n', [this, c](boost::system::error_code ec, size_t n) {
      if (ec || c->closed || stopping_) return Finish(c);  // peer closed, oversized line, or shutdown
      std::string line(asio::buffers_begin(c->buf.data()), asio::buffers_begin(c->buf.data()) + n);
      c->buf.consume(n);
      Count([](ApiServerStats& s) { ++s.requests; });
      json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool status = request.is_object() && request.contains("op") && request["op"] == "status";
      ++pending_writes_;  // the reply to come
      asio::post(status ? status_pool_ : pool_, [this, c, request = std::move(request)] {
        json reply = Call(c, request);
        asio::post(io_, [this, c, text = Line(reply)]() mutable {
          Queue(c, std::move(text), /*droppable=*/false);
          if (!c->closed && !stopping_) Read(c);
        });
      });
    });
  }

  // On a pool thread.
  json Call(const ConnPtr& c, const json& request) {
    if (request.is_discarded() || !request.is_object()) {
      return ErrorReply(InvalidArgument("the request is not a JSON object"));
    }
    ApiEmit emit = [this, c](const json& line) {
      asio::post(io_, [this, c, text = Line(line)]() mutable { Queue(c, std::move(text), true); });
    };
    try {
      return handler_(request, emit);
    } catch (const std::exception& e) {
      return ErrorReply(Internal(std::string("the request failed: ") + e.what()));
    } catch (...) {
      return ErrorReply(Internal("the request failed"));
    }
  }

  void Queue(const ConnPtr& c, std::string text, bool droppable) {
    if (c->closed) {
      if (!droppable) --pending_writes_;
      return;
    }
    if (droppable && c->queued + text.size() > kMaxQueuedProgress) return;  // a slow reader misses progress
    c->queued += text.size();
    c->out.push_back({std::move(text), !droppable});
    Write(c);
  }

  void Write(const ConnPtr& c) {
    if (c->writing || c->out.empty() || c->closed) return;
    c->writing = true;
    c->timer.expires_after(std::chrono::milliseconds(o_.write_timeout_ms));
    c->timer.async_wait([this, c](boost::system::error_code ec) {
      if (ec || c->closed) return;  // cancelled: the write finished
      Count([](ApiServerStats& s) { ++s.write_timeouts; });
      Close(c);  // a client that does not read is cut off
    });
    asio::async_write(c->socket, asio::buffer(c->out.front().text), [this, c](boost::system::error_code ec, size_t) {
      c->writing = false;
      c->timer.cancel();
      if (ec) return Close(c);
      c->queued -= c->out.front().text.size();
      if (c->out.front().reply) --pending_writes_;
      c->out.pop_front();
      if (c->out.empty() && c->read_done) return Close(c);
      Write(c);
    });
  }

  void Close(const ConnPtr& c) {
    if (c->closed) return;
    c->closed = true;
    boost::system::error_code ec;
    c->timer.cancel();
    c->socket.close(ec);
    for (const auto& line : c->out) {
      if (line.reply) --pending_writes_;
    }
    c->out.clear();
    c->queued = 0;
    c->writing = false;
    Finish(c);
  }

  // A connection is forgotten once it is closed or its peer left and nothing is in flight.
  void Finish(const ConnPtr& c) {
    if (!c->closed) {
      c->read_done = true;
      if (c->writing || !c->out.empty()) return;  // the last write's completion closes it
      return Close(c);
    }
    conns_.erase(c);
    Count([this](ApiServerStats& s) { s.open = conns_.size(); });
  }

  template <class F>
  void Count(F f) {
    std::lock_guard lock(stats_mu_);
    f(stats_);
  }

  const std::string path_;
  const ApiHandler handler_;
  const ApiServerOptions o_;
  asio::io_context io_;
  Local::acceptor acceptor_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::thread_pool pool_;         // handlers
  asio::thread_pool status_pool_;  // "status" only
  std::thread thread_;             // runs io_
  std::set<ConnPtr> conns_;        // I/O thread only
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> pending_writes_{0};  // replies being computed or not yet written
  bool bound_ = false;
  mutable std::mutex stats_mu_;
  ApiServerStats stats_;  // guarded by stats_mu_
};

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiServer::~ApiServer() { Stop(); }
void ApiServer::Stop() { impl_->Stop(); }
const std::string& ApiServer::path() const { return impl_->path(); }
ApiServerStats ApiServer::stats() const { return impl_->stats(); }

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& path, ApiHandler handler,
                                                    ApiServerOptions options) {
  auto impl = std::make_unique<Impl>(path, std::move(handler), options);
  FERRY_RETURN_IF_ERROR(impl->Bind());
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

}  // namespace ferry::vmhost
