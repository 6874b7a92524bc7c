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
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/incoming.h"
#include "ferry/migrate/page_sink.h"
#include "ferry/migrate/postcopy_destination.h"
#include "ferry/migrate/postcopy_memory.h"
#include "ferry/migrate/postcopy_protocol.h"

namespace ferry::migrate {
namespace {

using hypervisor::Vm;
double Ms(uint64_t ns) { return ns / 1e6; }

// A control message other than state or sync while pages flow: the source's abort or error
// (with its reason), or a protocol violation.
std::string DescribeUnexpected(const Frame& f) {
  if (IsGiveUp(f)) return "the source gave up: " + GiveUpReason(f);
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
  Status ReceiveState(Frame* state);
  Status FinishPrecopy(const Frame& state);
  Status PrepareFromState(const std::vector<uint8_t>& encoded);
  Status SwitchToPostcopy(const Frame& state);
  Result<Received> RunPostcopy(std::vector<std::thread>& threads);
  void DiscardPostcopy(std::vector<std::thread>& threads);
  void Verify(uint64_t target);
  Status AwaitLanded(const std::vector<uint64_t>& want);

  const IncomingOptions& o_;
  PeerGate& gate_;
  const Session session_;  // the gate's: sent in every welcome
  std::unique_ptr<Channel> control_;
  std::vector<std::unique_ptr<Channel>> data_;
  std::unique_ptr<Channel> requests_;  // post-copy's page requests (begin's post-copy flag)
  std::unique_ptr<PostcopyDestination> postcopy_;
  std::atomic<PostcopyDestination*> postcopy_live_{nullptr};  // for FailAll on stream threads
  std::atomic<PostcopyMemory*> place_{nullptr};  // set once pre-copy's frames landed: sinks place from then on
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
  // Post-copy: one more connection, index `streams`, for page requests.
  const uint32_t total = begin_.streams + (begin_.postcopy ? 1 : 0);
  for (uint32_t n = 0; n < total; ++n) {
    Hello h;
    FERRY_ASSIGN_OR_RETURN(auto ch, AcceptAuthenticated(Role::kData, o_.io_timeout_ms, &h));
    if (begin_.postcopy && h.stream == begin_.streams && !requests_) {
      ch->set_name("page requests");
      requests_ = std::move(ch);
      continue;
    }
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
  if (PostcopyDestination* pd = postcopy_live_.load()) pd->Abort(why);
  if (requests_) requests_->Close();
  if (control_) control_->Close();
  for (auto& ch : data_) {
    if (ch) ch->Close();
  }
}

Status DestMigration::ReceiveStream(uint32_t index) {
  Channel& ch = *data_[index];
  PageSink sink(vm_->memory(), index, begin_.streams);
  // The handshake's frames count in the sender's numbering: a stream that carries no page before
  // a sync (post-copy from the start) has landed everything the sync names.
  landed_[index].store(ch.frames_received(), std::memory_order_release);
  Frame f;
  for (;;) {
    FERRY_RETURN_IF_ERROR(ch.Receive(&f));
    switch (static_cast<MsgType>(f.type)) {
      case MsgType::kPages: {
        if (PostcopyMemory* m = place_.load(std::memory_order_acquire)) sink.set_postcopy(m);
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

// Until the source's state (pre-copy's kState, or post-copy's switchover), answering syncs.
Status DestMigration::ReceiveState(Frame* state) {
  Frame& f = *state;
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
    if (st.ok() && f.type != static_cast<uint16_t>(MsgType::kState) &&
        !(begin_.postcopy && f.type == static_cast<uint16_t>(MsgType::kPostcopyState))) {
      // Let Expect() turn an abort or error into the source's reason.
      control_->set_timeout_ms(o_.io_timeout_ms);
      return Status(ErrorCode::kAborted, DescribeUnexpected(f));
    }
    if (!st.ok()) return st;
    break;
  }
  control_->set_timeout_ms(o_.io_timeout_ms);
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
  if (begin_.postcopy) {
    if (Status uffd = PostcopyMemory::Available(); !uffd.ok()) {
      std::string why = "this destination cannot take post-copy: " + uffd.message();
      control_->Fail(why);
      return Status(ErrorCode::kUnsupported, why);
    }
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
      results[i] = Guarded("receiving a data stream", [&] { return ReceiveStream(i); });
      if (!results[i].ok()) FailAll(results[i]);
    });
  }
  Frame state_frame;
  Status st = ReceiveState(&state_frame);
  if (st.ok() && state_frame.type == static_cast<uint16_t>(MsgType::kPostcopyState)) {
    // The data streams stay open: the rest of guest RAM follows the running VM.
    st = SwitchToPostcopy(state_frame);
    if (!st.ok()) {
      DiscardPostcopy(threads);
      control_->Fail("the destination gives up: " + st.message());
      return st.Annotate("incoming post-copy migration from " + stats_.source);
    }
    stats_.receive_ms = Ms(MonotonicNs() - t0);
    return RunPostcopy(threads);
  }
  for (auto& t : threads) t.join();
  if (st.ok()) st = FinishPrecopy(state_frame);
  {
    std::lock_guard lock(mu_);
    if (!first_error_.ok()) st = first_error_;  // the cause, not the wake-up
  }
  for (auto& ch : data_) stats_.wire_bytes += ch->bytes_received();
  stats_.pages = pages_;
  if (!st.ok()) {
    control_->Fail("the destination gives up: " + st.message());
    return st.Annotate("incoming migration from " + stats_.source);
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
  if (begin_.verify) Verify(verify_target);
  control_->Close();
  return Received{std::move(vm_), stats_};
}

void DestMigration::Verify(uint64_t target) {
  auto v = hypervisor::AwaitVerification(*vm_, target, 120000);
  VerifyResult vr = v.ok() ? VerifyResult{v->passed, v->report.text} : VerifyResult{false, v.status().message()};
  stats_.verified = true;
  stats_.verify_passed = vr.passed;
  (void)control_->Send(MsgType::kVerifyResult, EncodeVerifyResult(vr));
}

Status DestMigration::FinishPrecopy(const Frame& f) {
  FERRY_ASSIGN_OR_RETURN(StateMsg msg, DecodeState(f.payload, begin_.streams));
  for (uint32_t i = 0; i < begin_.streams; ++i) {
    if (msg.stream_frames[i] != data_[i]->frames_received()) return Corrupt("stream frame counts do not match the state message");
  }
  return PrepareFromState(msg.vm_state);
}

Status DestMigration::PrepareFromState(const std::vector<uint8_t>& encoded) {
  hypervisor::VmState state;
  FERRY_RETURN_IF_ERROR(hypervisor::DecodeVmState(encoded, &state));
  if (state.config.mem_bytes != begin_.config.mem_bytes || state.config.vcpus != begin_.config.vcpus) {
    return Corrupt("the final state does not match the announced VM");
  }
  uint64_t t1 = MonotonicNs();
  Status st = vm_->LoadState(state);
  stats_.build_ms = Ms(MonotonicNs() - t1);
  return st.Annotate("load the migrated VM's state");
}

// Post-copy's switchover (PROTOCOL.md): every frame sent before it has landed; the pages it
// names are dropped and fetched on demand or placed as they stream in; then the state loads.
Status DestMigration::SwitchToPostcopy(const Frame& f) {
  FERRY_ASSIGN_OR_RETURN(PostcopyStateMsg msg,
                         DecodePostcopyState(f.payload, begin_.streams, begin_.config.mem_bytes / kPageBytes));
  FERRY_RETURN_IF_ERROR(AwaitLanded(msg.stream_frames));
  for (uint32_t i = 0; i < begin_.streams; ++i) {
    if (data_[i]->frames_received() != msg.stream_frames[i]) return Corrupt("pages arrived after the post-copy switchover's count");
  }
  PostcopyDestinationOptions po;
  po.io_timeout_ms = o_.io_timeout_ms;
  FERRY_ASSIGN_OR_RETURN(postcopy_, PostcopyDestination::Switch(vm_->memory(), msg.outstanding, *requests_, po));
  postcopy_live_.store(postcopy_.get());
  place_.store(&postcopy_->memory(), std::memory_order_release);
  stats_.postcopy = true;
  stats_.postcopy_outstanding = msg.outstanding.Count();
  return PrepareFromState(msg.vm_state);
}

// Throws this copy away without anything having left the host: held output dropped, held
// disk writes dropped (the image untouched), the VM stopped; the source resumes.
// Order matters: a vCPU or a device thread may be blocked on a missing page while it holds a
// device's lock (the NIC reading a ring, the disk a buffer), so the memory is abandoned first
// (they wake, to empty pages, and whatever they then emit is held); the locks are then free
// for the discards. The stream threads may be inside Place() until joined: only then does
// the post-copy state go.
void DestMigration::DiscardPostcopy(std::vector<std::thread>& threads) {
  FailAll(Status(ErrorCode::kAborted, "post-copy abandoned"));
  if (postcopy_) postcopy_->memory().Abandon();
  vm_->Stop();
  vm_->DiscardOutput();
  vm_->DiscardDiskOverlay();
  for (auto& t : threads) {
    if (t.joinable()) t.join();
  }
  place_.store(nullptr, std::memory_order_release);
  postcopy_live_.store(nullptr);
  postcopy_.reset();
}

Result<Received> DestMigration::RunPostcopy(std::vector<std::thread>& threads) {
  Frame f;
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kPrepared));
  Status st = control_->Expect(MsgType::kCommit, &f);
  uint64_t t2 = MonotonicNs();
  // Runs sealed against output: frames wait and disk writes stay in memory until every page is
  // here and the source has promised never to run again.
  if (st.ok()) {
    vm_->StartOutputBuffering();
    vm_->StartDiskOverlay(o_.postcopy_disk_hold_bytes);
    st = vm_->Start().Annotate("start the migrated VM");
  }
  if (!st.ok()) {
    DiscardPostcopy(threads);
    return st.Annotate("post-copy: nothing runs here");
  }
  Started started;
  started.resume_ns = MonotonicNs() - t2;
  started.guest_resume_ns = vm_->GuestNs();
  stats_.resume_ms = Ms(started.resume_ns);
  (void)control_->Send(MsgType::kStarted, EncodeStarted(started));  // lost: the source resumes, we fail below
  auto done = postcopy_->Finish(*control_, [this](PostcopyComplete* c) {
    auto d = vm_->Devices();
    c->held_frames = d.net.tx_buffered;
    c->held_disk_bytes = d.block.overlay_bytes;
  });
  stats_.postcopy_ms = Ms(MonotonicNs() - t2);
  if (done.ok() || done.status().code() == ErrorCode::kIndeterminate) {
    const PostcopyComplete& s = postcopy_->report();  // the figures the source was sent
    stats_.postcopy_faults = s.faults;
    stats_.postcopy_fetched_pages = s.fetched_pages;
    stats_.postcopy_placed_pages = s.placed_pages;
    stats_.fault_p50_us = s.fault_p50_us;
    stats_.fault_p99_us = s.fault_p99_us;
  }
  if (!done.ok() && done.status().code() == ErrorCode::kIndeterminate) {
    // Every page is here but the source's word is not: it may have resumed. Keep this copy
    // paused with everything held; the operator decides (`ferry resume --force` releases it).
    (void)vm_->Seal("post-copy: the source's end did not come");
    FailAll(Status(ErrorCode::kAborted, "post-copy: waiting for the operator"));
    for (auto& t : threads) t.join();
    place_.store(nullptr, std::memory_order_release);
    postcopy_live_.store(nullptr);
    postcopy_.reset();
    stats_.postcopy_unresolved = true;
    std::fprintf(stderr, "ferry incoming: %s\n", done.status().message().c_str());
    return Received{std::move(vm_), stats_};
  }
  if (!done.ok()) {
    DiscardPostcopy(threads);
    return done.status().Annotate("post-copy from " + stats_.source + " failed; nothing left this host, the source resumes");
  }
  // The source has stopped for good: this is the only copy. Let its output and disk writes go.
  for (auto& t : threads) t.join();
  {
    std::lock_guard lock(mu_);
    if (!first_error_.ok()) std::fprintf(stderr, "ferry incoming: after post-copy: %s\n", first_error_.message().c_str());
  }
  place_.store(nullptr, std::memory_order_release);
  postcopy_live_.store(nullptr);
  postcopy_.reset();  // every page is here
  if (Status c = vm_->CommitDiskOverlay(); !c.ok()) {
    // The image did not take the writes: releasing the output now would answer clients for
    // writes that exist only in this process. This is the only copy (the source has stopped
    // for good), so it is kept, paused, with its output and the writes held: the operator
    // fixes the disk and `ferry resume --force` writes them and releases it.
    (void)vm_->Seal("post-copy: writing the held disk writes failed");
    stats_.postcopy_unresolved = true;
    std::fprintf(stderr, "ferry incoming: WRITING THE HELD DISK WRITES FAILED: %s; the VM stays held here\n",
                 c.message().c_str());
    (void)control_->Send(MsgType::kPostcopyReleased, EncodeReason("held: " + c.message()));
    control_->Close();
    return Received{std::move(vm_), stats_};
  }
  vm_->StopOutputBuffering();
  (void)control_->Send(MsgType::kPostcopyReleased, EncodeReason(""));  // lost: the source says it cannot tell
  for (auto& ch : data_) stats_.wire_bytes += ch->bytes_received();
  stats_.wire_bytes += control_->bytes_received() + requests_->bytes_received();
  stats_.pages = pages_;
  if (begin_.verify) Verify(vm_->RequestVerify());
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
