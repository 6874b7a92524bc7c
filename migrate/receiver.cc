// Incoming::Receive(): the destination's state machine (PROTOCOL.md): authenticate, Begin,
// data streams, wait for State, build the VM, Prepared, wait for Commit, start, Started.
// Anything before Commit that fails discards everything: the source still runs the guest.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/incoming.h"
#include "ferry/migrate/page_sink.h"

namespace ferry::migrate {
namespace {

using hypervisor::Vm;
double Ms(uint64_t ns) { return ns / 1e6; }

// A control message other than state or sync while pages flow: the source's abort or error
// (with its reason), or a protocol violation.
std::string DescribeUnexpected(const Frame& f) {
  if (f.type == static_cast<uint16_t>(MsgType::kAbort) || f.type == static_cast<uint16_t>(MsgType::kError)) {
    auto reason = DecodeReason(f.payload);
    return "the source gave up: " + (reason.ok() ? *reason : reason.status().message());
  }
  return std::string("unexpected ") + MsgTypeName(f.type) + " message on the control stream";
}

class DestMigration {
 public:
  DestMigration(const IncomingOptions& o, PeerGate& gate, const Session& session)
      : o_(o), gate_(gate), session_(session) {}
  Result<Received> Run();

 private:
  Result<std::unique_ptr<Channel>> AcceptAuthenticated(Role role, uint64_t timeout_ms, Hello* hello);
  Status AcceptDataStreams();
  Status ReceiveStream(uint32_t index);
  void FailAll(const Status& why);
  Status ReceiveState(StateMsg* msg);
  Status AwaitLanded(const std::vector<uint64_t>& want);

  const IncomingOptions& o_;
  PeerGate& gate_;
  const Session session_;  // the gate's: sent in every welcome
  std::unique_ptr<Channel> control_;
  std::vector<std::unique_ptr<Channel>> data_;
  Begin begin_;
  std::unique_ptr<hypervisor::Vm> vm_;  // built at Begin; RAM lands in its memory
  std::atomic<uint64_t> pages_{0};
  std::unique_ptr<std::atomic<uint64_t>[]> landed_;  // per stream: frames received and applied
  std::vector<uint64_t> stream_pages_;
  std::mutex mu_;
  Status first_error_;  // guarded by mu_: the first data stream failure (the cause)
  bool closing_ = false;  // guarded by mu_: FailAll is closing every channel
  static constexpr int kEchoGraceMs = 50;
  IncomingStats stats_;
};

Result<std::unique_ptr<Channel>> DestMigration::AcceptAuthenticated(Role role, uint64_t timeout_ms, Hello* hello) {
  FERRY_ASSIGN_OR_RETURN(AcceptedPeer p, gate_.Next(role, timeout_ms));
  *hello = p.hello;
  return std::move(p.channel);
}

Status DestMigration::AcceptDataStreams() {
  data_.resize(begin_.streams);
  for (uint32_t n = 0; n < begin_.streams; ++n) {
    Hello h;
    FERRY_ASSIGN_OR_RETURN(auto ch, AcceptAuthenticated(Role::kData, o_.io_timeout_ms, &h));
    if (h.stream >= begin_.streams || data_[h.stream]) {
      ch->Fail("invalid or duplicate stream index");
      return Corrupt("the source opened stream " + std::to_string(h.stream) + " twice or out of range");
    }
    data_[h.stream] = std::move(ch);
  }
  // Every peer is here: stop accepting (later connections wait in the backlog, unanswered).
  gate_.Shutdown();
  stats_.refused_peers = gate_.refused();
  return Status::Ok();
}

void DestMigration::FailAll(const Status& why) {
  {
    std::lock_guard lock(mu_);
    // The source's own error frame is an echo when one of our streams broke first: it often
    // races the broken stream's report. Keep our observation of the cause, but only while no
    // stream has been woken by our own Close (whose errors are not causes).
    bool echo = first_error_.code() == ErrorCode::kAborted && why.code() != ErrorCode::kAborted;
    if (first_error_.ok() || (echo && !closing_)) first_error_ = why;
    if (first_error_.code() == ErrorCode::kAborted && !closing_) {
      // Give the other streams a moment to report a cause of their own before we close them.
      mu_.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(kEchoGraceMs));
      mu_.lock();
      if (closing_) return;
    }
    closing_ = true;
  }
  // Wake every other thread (and tell the source: its sends fail at once).
  if (control_) control_->Close();
  for (auto& ch : data_) {
    if (ch) ch->Close();
  }
}

Status DestMigration::ReceiveStream(uint32_t index) {
  Channel& ch = *data_[index];
  PageSink sink(vm_->memory(), index, begin_.streams);
  Frame f;
  for (;;) {
    FERRY_RETURN_IF_ERROR(ch.Receive(&f));
    switch (static_cast<MsgType>(f.type)) {
      case MsgType::kPages: {
        auto n = sink.Apply(f.payload);
        if (!n.ok()) return n.status().Annotate(ch.name() + " " + std::to_string(index));
        stream_pages_[index] += *n;
        // In the sender's numbering (handshake frames included): frames up to here are in memory.
        landed_[index].store(ch.frames_received(), std::memory_order_release);
        pages_.fetch_add(*n, std::memory_order_relaxed);
        break;
      }
      case MsgType::kStreamEnd: {
        FERRY_ASSIGN_OR_RETURN(StreamEnd end, DecodeStreamEnd(f.payload));
        if (end.pages != stream_pages_[index] || end.frames != ch.frames_received() - 1) {
          return Corrupt("data stream " + std::to_string(index) + " ended with a count mismatch (pages " +
                         std::to_string(end.pages) + " sent, " + std::to_string(stream_pages_[index]) + " received)");
        }
        return Status::Ok();
      }
      case MsgType::kError: {
        auto reason = DecodeReason(f.payload);
        return Status(ErrorCode::kAborted, "the source gave up: " + (reason.ok() ? *reason : std::string("?")));
      }
      default:
        return Corrupt(std::string("unexpected ") + MsgTypeName(f.type) + " message on data stream " + std::to_string(index));
    }
  }
}

Status DestMigration::AwaitLanded(const std::vector<uint64_t>& want) {
  uint64_t deadline = MonotonicNs() + o_.io_timeout_ms * 1000000;
  for (uint32_t i = 0; i < want.size(); ++i) {
    while (landed_[i].load(std::memory_order_acquire) < want[i]) {
      {
        std::lock_guard lock(mu_);
        if (!first_error_.ok()) return first_error_;
      }
      if (MonotonicNs() > deadline) return Timeout("data stream " + std::to_string(i) + " did not catch up");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return Status::Ok();
}

Status DestMigration::ReceiveState(StateMsg* msg) {
  Frame f;
  // The control stream is idle while pages flow; the data streams' own timeouts (and
  // FailAll) bound the wait.
  control_->set_timeout_ms(0);
  for (;;) {
    Status st = control_->Receive(&f);
    if (st.ok() && f.type == static_cast<uint16_t>(MsgType::kSync)) {
      FERRY_ASSIGN_OR_RETURN(auto want, DecodeSync(f.payload, begin_.streams));
      FERRY_RETURN_IF_ERROR(AwaitLanded(want));
      FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kSynced));
      continue;
    }
    if (st.ok() && f.type != static_cast<uint16_t>(MsgType::kState)) {
      // Let Expect() turn an abort or error into the source's reason.
      control_->set_timeout_ms(o_.io_timeout_ms);
      return Status(ErrorCode::kAborted, DescribeUnexpected(f));
    }
    if (!st.ok()) return st;
    break;
  }
  control_->set_timeout_ms(o_.io_timeout_ms);
  FERRY_ASSIGN_OR_RETURN(*msg, DecodeState(f.payload, begin_.streams));
  return Status::Ok();
}

Result<Received> DestMigration::Run() {
  Hello hello;
  FERRY_ASSIGN_OR_RETURN(control_, AcceptAuthenticated(Role::kControl, o_.accept_timeout_ms, &hello));
  stats_.source = control_->connection().PeerAddress();
  uint64_t t0 = MonotonicNs();
  Frame f;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kBegin, &f));
  auto begin = DecodeBegin(f.payload);
  if (!begin.ok()) {
    control_->Fail(begin.status().message());
    return begin.status();
  }
  begin_ = *begin;
  stats_.generation = begin_.generation;
  if (begin_.generation < o_.min_generation) {
    std::string why = "stale generation: the source's VM is generation " + std::to_string(begin_.generation) +
                      ", this destination expects " + std::to_string(o_.min_generation) + " or newer (a newer primary exists)";
    control_->Fail(why);
    return Status(ErrorCode::kAborted, why);
  }
  // A source may announce more RAM than this host has: refuse it before allocating.
  if (const uint64_t host = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE));
      host && begin_.config.mem_bytes > host) {
    std::string why = "the VM's " + std::to_string(begin_.config.mem_bytes >> 20) + " MiB of RAM is more than this host's " +
                      std::to_string(host >> 20) + " MiB";
    control_->Fail(why);
    return InvalidArgument(why);
  }
  auto memory = hypervisor::GuestMemory::Create(begin_.config.mem_bytes);
  if (!memory.ok()) {
    control_->Fail("the destination cannot allocate guest memory: " + memory.status().message());
    return memory.status().Annotate("allocate guest memory");
  }
  // Build the VM now, while RAM is still to come: KVM VM, vCPUs, memory slot and this host's
  // device backends cost ~1 ms that would otherwise fall into the downtime, and a missing disk
  // or busy TAP is refused before any RAM is sent.
  hypervisor::VmConfig config = begin_.config;
  o_.devices.ApplyTo(&config.devices);
  auto vm = Vm::Prepare(config, std::move(memory).value(), o_.console);
  if (!vm.ok()) {
    control_->Fail("the destination cannot build the VM: " + vm.status().message());
    return vm.status().Annotate("build the incoming VM");
  }
  vm_ = std::move(vm).value();
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kReady));
  if (Status st = AcceptDataStreams(); !st.ok()) {
    control_->Fail(st.message());
    return st;
  }
  stream_pages_.assign(begin_.streams, 0);
  landed_ = std::make_unique<std::atomic<uint64_t>[]>(begin_.streams);
  std::vector<Status> results(begin_.streams);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < begin_.streams; ++i) {
    threads.emplace_back([this, i, &results] {
      results[i] = ReceiveStream(i);
      if (!results[i].ok()) FailAll(results[i]);
    });
  }
  StateMsg state_msg;
  Status st = ReceiveState(&state_msg);
  for (auto& t : threads) t.join();
  {
    std::lock_guard lock(mu_);
    if (!first_error_.ok()) st = first_error_;  // the cause, not the wake-up
  }
  for (uint32_t i = 0; st.ok() && i < begin_.streams; ++i) {
    if (state_msg.stream_frames[i] != data_[i]->frames_received()) st = Corrupt("stream frame counts do not match the state message");
  }
  hypervisor::VmState state;
  if (st.ok()) st = hypervisor::DecodeVmState(state_msg.vm_state, &state);
  if (st.ok() && (state.config.mem_bytes != begin_.config.mem_bytes || state.config.vcpus != begin_.config.vcpus)) {
    st = Corrupt("the final state does not match the announced VM");
  }
  for (auto& ch : data_) stats_.wire_bytes += ch->bytes_received();
  stats_.pages = pages_;
  if (!st.ok()) {
    control_->Fail("the destination gives up: " + st.message());
    return st.Annotate("incoming migration from " + stats_.source);
  }
  uint64_t t1 = MonotonicNs();
  st = vm_->LoadState(state);
  stats_.build_ms = Ms(MonotonicNs() - t1);
  if (!st.ok()) {
    control_->Fail("the destination cannot load the VM's state: " + st.message());
    return st.Annotate("load the migrated VM's state");
  }
  stats_.receive_ms = Ms(MonotonicNs() - t0);
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kPrepared));
  st = control_->Expect(MsgType::kCommit, &f);
  if (!st.ok()) return st.Annotate("the source did not commit; nothing runs here");
  // Committed: from here the guest runs here and only here.
  uint64_t t2 = MonotonicNs();
  uint64_t verify_target = begin_.verify ? vm_->RequestVerify() : 0;
  if (Status s = vm_->Start(); !s.ok()) return s.Annotate("start the migrated VM");
  Started started;
  started.resume_ns = MonotonicNs() - t2;
  started.guest_resume_ns = vm_->GuestNs();
  stats_.resume_ms = Ms(started.resume_ns);
  stats_.wire_bytes += control_->bytes_received();
  (void)control_->Send(MsgType::kStarted, EncodeStarted(started));  // the guest runs either way
  if (begin_.verify) {
    auto v = hypervisor::AwaitVerification(*vm_, verify_target, 120000);
    VerifyResult vr = v.ok() ? VerifyResult{v->passed, v->report.text} : VerifyResult{false, v.status().message()};
    stats_.verified = true;
    stats_.verify_passed = vr.passed;
    (void)control_->Send(MsgType::kVerifyResult, EncodeVerifyResult(vr));
  }
  control_->Close();
  return Received{std::move(vm_), stats_};
}

}  // namespace

Incoming::Incoming(const IncomingOptions& options, std::unique_ptr<Listener> listener)
    : options_(options), listener_(std::move(listener)) {}
Incoming::~Incoming() = default;

Result<std::unique_ptr<Incoming>> Incoming::Listen(const IncomingOptions& options) {
  FERRY_ASSIGN_OR_RETURN(Endpoint at, ParseEndpoint(options.listen));
  FERRY_ASSIGN_OR_RETURN(auto listener, ListenTcp(at));
  return std::unique_ptr<Incoming>(new Incoming(options, std::move(listener)));
}

std::string Incoming::address() const { return listener_->LocalAddress(); }

Result<Received> Incoming::Receive() {
  PeerGateOptions g;
  g.security = options_.security;
  g.session = NewSession();
  g.io_timeout_ms = options_.io_timeout_ms;
  g.who = "ferry incoming";
  FERRY_ASSIGN_OR_RETURN(auto gate, PeerGate::Start(*listener_, g));
  {
    std::lock_guard lock(mu_);
    gate_ = gate.get();
  }
  DestMigration m(options_, *gate, g.session);
  auto r = m.Run();
  std::lock_guard lock(mu_);
  gate_ = nullptr;
  return r;  // the gate's threads are joined as it goes, after the VM started
}

void Incoming::Cancel() {
  listener_->Close();
  std::lock_guard lock(mu_);
  if (gate_) gate_->Shutdown();
}

}  // namespace ferry::migrate
