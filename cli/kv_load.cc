// KvLoad (kv_load.h): options, the wire codec, the load client and its report.
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include "kv_load.h"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <unordered_map>

#include "ferry/base/clock.h"
#include "ferry/base/coding.h"
#include "ferry/migrate/transport.h"

namespace ferry::cli {
namespace {

namespace asio = boost::asio;
using asio::ip::udp;

constexpr double kMaxRate = 1e6;
constexpr size_t kReceiveBytes = 64;       // above a message, so an oversized reply shows as one
constexpr uint64_t kTickNs = 50'000'000;   // the send timer notices `stop` at least this often
constexpr uint64_t kMaxBurst = 4096;       // catch-up sends per timer turn, so replies interleave
constexpr uint32_t kVerifyAttempts = 3;
constexpr size_t kVerifyWindow = 64;       // verification GETs in flight at once
constexpr size_t kMaxAnomalies = 8;
constexpr uint64_t kNone = UINT64_MAX;

Result<udp::endpoint> ServerEndpoint(const std::string& text) {
  auto ep = migrate::ParseEndpoint(text);
  if (!ep.ok()) return ep.status().Annotate("server");
  if (ep->port == 0) return InvalidArgument("server: port 0");
  return udp::endpoint(asio::ip::make_address(ep->host), ep->port);
}

// ADDR (any port) or ADDR:PORT.
Result<udp::endpoint> BindEndpoint(const std::string& text) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(text, ec);
  if (!ec) return udp::endpoint(address, 0);
  auto ep = migrate::ParseEndpoint(text);
  if (!ep.ok()) return InvalidArgument("bind: '" + text + "' is neither a numeric address nor ADDR:PORT");
  return udp::endpoint(asio::ip::make_address(ep->host), ep->port);
}

bool KnownStatus(uint8_t op, uint8_t status) {
  switch (status) {
    case FKV_ST_OK:
    case FKV_ST_BAD_REQUEST:
    case FKV_ST_IO_ERROR:
      return true;
    case FKV_ST_NOT_FOUND:
      return op == FKV_OP_GET;
    default:
      return false;
  }
}

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

enum class Phase : uint8_t { kLoad, kVerify };

// A request awaiting its reply, by request id.
struct Pending {
  Phase phase;
  uint8_t op;
  bool expired;      // a load request already counted unanswered
  uint64_t key;
  uint64_t value;    // PUT: the value sent
  uint64_t floor;    // GET: the key's highest acknowledged value when the GET was sent
  uint64_t sent_ns;
};

struct KeyState {
  uint64_t last_sent_put = 0;    // value of the newest PUT sent; 0: none
  uint64_t last_acked = 0;       // highest value acknowledged OK; 0: none
  uint64_t last_seen = 0;        // highest value a GET answer showed; later reads may not go below it
  std::vector<uint64_t> acked;   // every acknowledged value, to count what a loss took
};

// One run. Single-threaded: every member is touched only by the thread in Run().
class LoadClient {
 public:
  LoadClient(const KvLoadOptions& o, const std::atomic<bool>& stop, udp::endpoint server)
      : o_(o), stop_(stop), server_(std::move(server)), value_base_(RealtimeNs()), rng_(MonotonicNs()) {}

  Status Open(const std::optional<udp::endpoint>& bind) {
    boost::system::error_code ec;
    socket_.open(server_.protocol(), ec);
    if (ec) return Status(ErrorCode::kIo, "udp socket: " + ec.message());
    // Best effort: room for the burst of replies a resumed service sends at once, or a
    // replicated one releases when a checkpoint is acknowledged (an epoch's worth at 60000
    // requests/s and 100 ms epochs is 6000 datagrams). Past rmem_max only as root.
    socket_.set_option(asio::socket_base::receive_buffer_size(1 << 20), ec);
    int want = 16 << 20;
    (void)::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want);
    if (bind) {
      socket_.bind(*bind, ec);
      if (ec) {
        return Status(ec == asio::error::address_in_use ? ErrorCode::kBusy : ErrorCode::kIo,
                      "bind " + bind->address().to_string() + ":" + std::to_string(bind->port()) + ": " + ec.message());
      }
    }
    return Status::Ok();
  }

  KvLoadResult Run() {
    Receive();
    start_ns_ = MonotonicNs();
    Tick();
    RunUntil([this] { return sending_done_; });
    Drain();
    if (o_.verify) Verify();
    Finish();
    return std::move(r_);
  }

 private:
  void RunUntil(const std::function<bool()>& done) {
    while (!done()) {
      io_.run_one();
      if (io_.stopped()) io_.restart();
    }
  }

  void Receive() {
    socket_.async_receive_from(asio::buffer(rx_), rx_from_, [this](const boost::system::error_code& ec, size_t n) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) OnDatagram(std::span<const uint8_t>(rx_.data(), n), MonotonicNs());
      Receive();
    });
  }

  // The send timer. Open loop: every request due by now goes out however many replies are
  // missing, and a timer that fell behind catches up, so the average rate holds.
  void Tick() {
    uint64_t now = MonotonicNs();
    uint64_t elapsed = now - start_ns_;
    uint64_t end_ns = o_.duration_ms * 1'000'000;
    if (stop_.load() || (o_.duration_ms != 0 && elapsed >= end_ns)) {
      end_send_ns_ = now;
      sending_done_ = true;
      return;
    }
    uint64_t due = static_cast<uint64_t>(static_cast<double>(elapsed) * o_.rate / 1e9) + 1;
    for (uint64_t burst = 0; issued_ < due && burst < kMaxBurst; ++burst) SendLoad(MonotonicNs());
    uint64_t next = static_cast<uint64_t>(std::ceil(static_cast<double>(issued_) * 1e9 / o_.rate));
    uint64_t wake = std::min(next, elapsed + kTickNs);
    if (o_.duration_ms != 0) wake = std::min(wake, end_ns);
    timer_.expires_after(std::chrono::nanoseconds(wake > elapsed ? wake - elapsed : 0));
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) Tick();
    });
  }

  bool Send(uint64_t id, const Pending& p) {
    fkv_msg m{};
    m.magic = FKV_MAGIC;
    m.op = p.op;
    m.req_id = id;
    m.key = p.key;
    m.value = p.value;
    auto bytes = EncodeKvMsg(m);
    boost::system::error_code ec;
    socket_.send_to(asio::buffer(bytes), server_, 0, ec);
    if (ec && !send_error_noted_) {
      send_error_noted_ = true;
      Anomaly("send: " + ec.message());
    }
    return !ec;
  }

  void SendLoad(uint64_t now) {
    ++issued_;
    uint64_t key = next_key_++ % o_.keys;
    bool put = percent_(rng_) < o_.put_percent;
    uint64_t id = next_id_++;
    KeyState& ks = keys_[key];
    Pending p{Phase::kLoad, put ? uint8_t{FKV_OP_PUT} : uint8_t{FKV_OP_GET}, false, key, put ? value_base_ + id : 0,
              std::max(ks.last_acked, ks.last_seen), now};
    if (!Send(id, p)) {
      ++r_.send_errors;
      return;
    }
    ++r_.sent;
    ++(put ? r_.puts_sent : r_.gets_sent);
    if (put) ks.last_sent_put = p.value;
    pending_.emplace(id, p);
    ++load_outstanding_;
    if (gap_anchor_ns_ == kNone) gap_anchor_ns_ = now;
  }

  // The newest value `ks` may hold: this run's last PUT, or anything an earlier run left.
  uint64_t Newest(const KeyState& ks) const { return std::max(ks.last_sent_put, value_base_); }

  void Anomaly(std::string what) {
    if (r_.anomalies.size() < kMaxAnomalies) r_.anomalies.push_back(std::move(what));
  }

  void BadReply(const std::string& why) {
    if (r_.bad_replies++ == 0) Anomaly("bad reply: " + why);
  }

  void OnDatagram(std::span<const uint8_t> datagram, uint64_t now) {
    auto msg = DecodeKvMsg(datagram);
    if (!msg.ok()) return BadReply(msg.status().message());
    auto it = pending_.find(msg->req_id);
    if (it == pending_.end()) return BadReply("no request " + std::to_string(msg->req_id) + " is outstanding");
    const Pending p = it->second;
    if (msg->op != p.op || msg->key != p.key || !KnownStatus(p.op, msg->status)) {
      return BadReply("reply to request " + std::to_string(msg->req_id) + " has op " + std::to_string(msg->op) +
                      ", key " + std::to_string(msg->key) + ", status " + std::to_string(msg->status) +
                      " (asked op " + std::to_string(p.op) + ", key " + std::to_string(p.key) + ")");
    }
    pending_.erase(it);
    if (p.expired) {
      ++r_.late_replies;
    } else if (p.phase == Phase::kLoad) {
      OnLoadReply(p, *msg, now);
    } else {
      OnVerifyReply(p, *msg);
    }
  }

  // Any valid reply ends the current gap. Replies after sending ended are clipped to its end.
  void NoteAnswer(uint64_t now) {
    uint64_t t = sending_done_ ? std::min(now, end_send_ns_) : now;
    if (gap_anchor_ns_ != kNone && t > gap_anchor_ns_ && t - gap_anchor_ns_ > gap_ns_) {
      gap_ns_ = t - gap_anchor_ns_;
      gap_start_ns_ = gap_anchor_ns_;
    }
    gap_anchor_ns_ = load_outstanding_ > 0 ? t : kNone;
  }

  void OnLoadReply(const Pending& p, const fkv_msg& m, uint64_t now) {
    --load_outstanding_;
    NoteAnswer(now);
    latencies_ns_.push_back(now - p.sent_ns);
    KeyState& ks = keys_[p.key];
    if (p.op == FKV_OP_PUT) {
      if (m.status != FKV_ST_OK) {
        ++r_.put_errors;
        return;
      }
      ++r_.acked_puts;
      ks.last_acked = std::max(ks.last_acked, p.value);
      ks.acked.push_back(p.value);
      return;
    }
    if (m.status != FKV_ST_OK && m.status != FKV_ST_NOT_FOUND) {
      ++r_.get_errors;
      return;
    }
    ++r_.gets_answered;
    bool found = m.status == FKV_ST_OK;
    bool ok = found ? m.value >= std::max<uint64_t>(p.floor, 1) && m.value <= Newest(ks) : p.floor == 0;
    if (ok && found) ks.last_seen = std::max(ks.last_seen, m.value);
    if (!ok) {
      ++r_.stale_reads;
      Anomaly("key " + std::to_string(p.key) + ": GET answered " + (found ? std::to_string(m.value) : "NOT_FOUND") +
              ", expected " + std::to_string(p.floor) + ".." + std::to_string(Newest(ks)));
    }
  }

  // Waits up to timeout_ms for replies to what is still outstanding, then writes the rest off.
  void Drain() {
    if (load_outstanding_ > 0) {
      timer_fired_ = false;
      timer_.expires_after(std::chrono::milliseconds(o_.timeout_ms));
      timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) timer_fired_ = true;
      });
      RunUntil([this] { return timer_fired_ || load_outstanding_ == 0; });
      timer_.cancel();
    }
    // Requests sent after the last reply and never answered: the gap ran to the end.
    if (load_outstanding_ > 0 && gap_anchor_ns_ != kNone && end_send_ns_ > gap_anchor_ns_ &&
        end_send_ns_ - gap_anchor_ns_ > gap_ns_) {
      gap_ns_ = end_send_ns_ - gap_anchor_ns_;
      gap_start_ns_ = gap_anchor_ns_;
    }
    for (auto& [id, p] : pending_) p.expired = true;
    r_.unanswered = load_outstanding_;
    load_outstanding_ = 0;
  }

  void Verify() {
    uint64_t t0 = MonotonicNs();
    std::vector<uint64_t> keys;
    for (const auto& [key, ks] : keys_) {
      if (ks.last_acked != 0) keys.push_back(key);
    }
    std::sort(keys.begin(), keys.end());
    verify_queue_.assign(keys.begin(), keys.end());
    Pump();
    Sweep();
    RunUntil([this] { return verify_queue_.empty() && verify_outstanding_ == 0; });
    timer_.cancel();
    r_.verify_ms = Ms(MonotonicNs() - t0);
  }

  // Sends verification GETs while the window has room.
  void Pump() {
    while (verify_outstanding_ < kVerifyWindow && !verify_queue_.empty()) {
      uint64_t key = verify_queue_.front();
      verify_queue_.pop_front();
      ++verify_attempts_[key];
      uint64_t id = next_id_++;
      Pending p{Phase::kVerify, FKV_OP_GET, false, key, 0, 0, MonotonicNs()};
      if (!Send(id, p)) {
        Retry(key);
        continue;
      }
      pending_.emplace(id, p);
      verify_order_.push_back(id);
      ++verify_outstanding_;
    }
  }

  void Retry(uint64_t key) {
    if (verify_attempts_[key] < kVerifyAttempts) {
      verify_queue_.push_back(key);
      return;
    }
    ++r_.unverifiable_keys;
    Anomaly("key " + std::to_string(key) + ": no verification answer in " + std::to_string(kVerifyAttempts) +
            " attempts");
  }

  // Times out verification GETs (oldest first: they share one timeout) and re-arms itself.
  void Sweep() {
    uint64_t now = MonotonicNs();
    uint64_t timeout_ns = o_.timeout_ms * 1'000'000;
    while (!verify_order_.empty()) {
      auto it = pending_.find(verify_order_.front());
      if (it == pending_.end()) {  // answered
        verify_order_.pop_front();
        continue;
      }
      if (now - it->second.sent_ns < timeout_ns) break;
      uint64_t key = it->second.key;
      pending_.erase(it);
      verify_order_.pop_front();
      --verify_outstanding_;
      Retry(key);
    }
    Pump();
    if (verify_order_.empty()) return;  // nothing in flight: Pump had nothing left to send
    uint64_t deadline = pending_.at(verify_order_.front()).sent_ns + timeout_ns;
    timer_.expires_after(std::chrono::nanoseconds(deadline > now ? deadline - now : 0));
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) Sweep();
    });
  }

  void OnVerifyReply(const Pending& p, const fkv_msg& m) {
    --verify_outstanding_;
    if (m.status == FKV_ST_BAD_REQUEST || m.status == FKV_ST_IO_ERROR) {
      Retry(p.key);
      Pump();
      return;
    }
    ++r_.verified_keys;
    const KeyState& ks = keys_[p.key];
    bool found = m.status == FKV_ST_OK;
    if (found && (m.value == 0 || m.value > Newest(ks))) {
      ++r_.stale_reads;
      Anomaly("key " + std::to_string(p.key) + ": holds " + std::to_string(m.value) + ", a value never written to it");
    } else {
      uint64_t held = found ? m.value : 0;
      if (held < ks.last_acked) {
        auto lost = std::count_if(ks.acked.begin(), ks.acked.end(), [held](uint64_t v) { return v > held; });
        r_.lost_puts += lost;
        Anomaly("key " + std::to_string(p.key) + ": holds " + (found ? std::to_string(held) : "nothing") + ", " +
                std::to_string(lost) + " acknowledged PUT(s) lost, the newest " + std::to_string(ks.last_acked));
      } else if (held < ks.last_seen) {
        // Not an acknowledged PUT, but a reply showed this value: the service exposed a
        // state it later lost (what output commit prevents across a failover).
        ++r_.unreflected_replies;
        Anomaly("key " + std::to_string(p.key) + ": holds " + (found ? std::to_string(held) : "nothing") +
                ", but a GET answered " + std::to_string(ks.last_seen));
      }
    }
    Pump();
  }

  void Finish() {
    r_.duration_ms = Ms(end_send_ns_ - start_ns_);
    r_.send_rate = r_.duration_ms > 0 ? static_cast<double>(r_.sent) * 1000 / r_.duration_ms : 0;
    r_.client_gap_ms = Ms(gap_ns_);
    r_.gap_start_ms = gap_ns_ != 0 ? Ms(gap_start_ns_ - start_ns_) : 0;
    if (!latencies_ns_.empty()) {
      std::sort(latencies_ns_.begin(), latencies_ns_.end());
      size_t n = latencies_ns_.size() - 1;
      r_.latency_p50_ms = Ms(latencies_ns_[n / 2]);
      r_.latency_p99_ms = Ms(latencies_ns_[n * 99 / 100]);
      r_.latency_max_ms = Ms(latencies_ns_.back());
    }
  }

  const KvLoadOptions o_;
  const std::atomic<bool>& stop_;
  const udp::endpoint server_;
  // PUT values are value_base_ + request id: unique and increasing within the run and above
  // whatever an earlier run left in the (durable) store, so those old values read as older.
  const uint64_t value_base_;
  asio::io_context io_;  // before the socket and the timer, which it must outlive
  udp::socket socket_{io_};
  asio::steady_timer timer_{io_};  // sending, then the straggler wait, then verification timeouts
  std::array<uint8_t, kReceiveBytes> rx_{};
  udp::endpoint rx_from_;
  std::mt19937_64 rng_;
  std::uniform_int_distribution<uint32_t> percent_{0, 99};

  KvLoadResult r_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::unordered_map<uint64_t, KeyState> keys_;
  std::vector<uint64_t> latencies_ns_;
  uint64_t next_id_ = 1;
  uint64_t next_key_ = 0;
  uint64_t issued_ = 0;  // load requests attempted, sent or not: the pacing count
  uint64_t load_outstanding_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t end_send_ns_ = 0;
  bool sending_done_ = false;
  bool timer_fired_ = false;
  bool send_error_noted_ = false;
  // The gap in progress began at gap_anchor_ns_ (the last reply, or the first send after a
  // moment with nothing outstanding); kNone: nothing outstanding.
  uint64_t gap_anchor_ns_ = kNone;
  uint64_t gap_ns_ = 0;
  uint64_t gap_start_ns_ = 0;

  std::deque<uint64_t> verify_queue_;  // keys still to read
  std::deque<uint64_t> verify_order_;  // request ids in flight, oldest first
  std::unordered_map<uint64_t, uint32_t> verify_attempts_;
  size_t verify_outstanding_ = 0;
};

}  // namespace

std::array<uint8_t, FKV_MSG_BYTES> EncodeKvMsg(const fkv_msg& msg) {
  Encoder e;
  e.PutU32(msg.magic);
  e.PutU8(msg.op);
  e.PutU8(msg.status);
  e.PutU16(msg.reserved);
  e.PutU64(msg.req_id);
  e.PutU64(msg.key);
  e.PutU64(msg.value);
  std::array<uint8_t, FKV_MSG_BYTES> out{};
  std::copy_n(e.bytes().begin(), out.size(), out.begin());
  return out;
}

Result<fkv_msg> DecodeKvMsg(std::span<const uint8_t> datagram) {
  if (datagram.size() != FKV_MSG_BYTES) {
    return Corrupt("kvstore message of " + std::to_string(datagram.size()) + " bytes, expected " +
                   std::to_string(FKV_MSG_BYTES));
  }
  Decoder in(datagram);
  fkv_msg m{};
  in.GetU32(&m.magic);
  in.GetU8(&m.op);
  in.GetU8(&m.status);
  in.GetU16(&m.reserved);
  in.GetU64(&m.req_id);
  in.GetU64(&m.key);
  in.GetU64(&m.value);
  if (!in.ok()) return Corrupt("kvstore message truncated");
  if (m.magic != FKV_MAGIC) return Corrupt("kvstore message with bad magic " + std::to_string(m.magic));
  return m;
}

Status ValidateKvLoadOptions(const KvLoadOptions& o) {
  if (!(o.rate > 0 && o.rate <= kMaxRate)) {
    return InvalidArgument("rate must be above 0 and at most " + std::to_string(static_cast<int>(kMaxRate)) +
                           " requests/s");
  }
  if (o.keys == 0) return InvalidArgument("keys must be at least 1");
  if (o.put_percent > 100) return InvalidArgument("put percent must be 0..100");
  if (o.timeout_ms == 0) return InvalidArgument("timeout must be at least 1 ms");
  FERRY_ASSIGN_OR_RETURN(udp::endpoint server, ServerEndpoint(o.server));
  if (!o.bind.empty()) {
    FERRY_ASSIGN_OR_RETURN(udp::endpoint bind, BindEndpoint(o.bind));
    if (bind.protocol() != server.protocol()) {
      return InvalidArgument("bind address " + o.bind + " and server " + o.server + " are of different IP versions");
    }
  }
  return Status::Ok();
}

Result<KvLoadResult> RunKvLoad(const KvLoadOptions& options, const std::atomic<bool>& stop) {
  FERRY_RETURN_IF_ERROR(ValidateKvLoadOptions(options));
  FERRY_ASSIGN_OR_RETURN(udp::endpoint server, ServerEndpoint(options.server));
  std::optional<udp::endpoint> bind;
  if (!options.bind.empty()) {
    FERRY_ASSIGN_OR_RETURN(bind, BindEndpoint(options.bind));
  }
  LoadClient client(options, stop, server);
  FERRY_RETURN_IF_ERROR(client.Open(bind));
  return client.Run();
}

std::string KvLoadFailure(const KvLoadResult& r) {
  std::string why;
  auto add = [&why](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
  if (r.lost_puts != 0) add(std::to_string(r.lost_puts) + " acknowledged PUT(s) lost");
  if (r.stale_reads != 0) add(std::to_string(r.stale_reads) + " stale read(s)");
  if (r.unreflected_replies != 0) add(std::to_string(r.unreflected_replies) + " key(s) lost a value a reply had shown");
  if (r.unverifiable_keys != 0) add(std::to_string(r.unverifiable_keys) + " key(s) could not be verified");
  if (r.acked_puts == 0) add("no PUT was acknowledged");
  return why;
}

nlohmann::json KvLoadResultJson(const KvLoadResult& r) {
  return {{"sent", r.sent},
          {"puts_sent", r.puts_sent},
          {"gets_sent", r.gets_sent},
          {"send_errors", r.send_errors},
          {"acked_puts", r.acked_puts},
          {"put_errors", r.put_errors},
          {"gets_answered", r.gets_answered},
          {"get_errors", r.get_errors},
          {"stale_reads", r.stale_reads},
          {"unanswered", r.unanswered},
          {"bad_replies", r.bad_replies},
          {"late_replies", r.late_replies},
          {"lost_puts", r.lost_puts},
          {"unreflected_replies", r.unreflected_replies},
          {"verified_keys", r.verified_keys},
          {"unverifiable_keys", r.unverifiable_keys},
          {"client_gap_ms", r.client_gap_ms},
          {"gap_start_ms", r.gap_start_ms},
          {"duration_ms", r.duration_ms},
          {"send_rate", r.send_rate},
          {"latency_p50_ms", r.latency_p50_ms},
          {"latency_p99_ms", r.latency_p99_ms},
          {"latency_max_ms", r.latency_max_ms},
          {"verify_ms", r.verify_ms},
          {"anomalies", r.anomalies}};
}

}  // namespace ferry::cli
