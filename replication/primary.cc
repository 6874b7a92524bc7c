// Replicator: the primary's thread — connect, initial sync, then one checkpoint per epoch
// (PROTOCOL.md, "Replication").
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/base/unique_fd.h"
#include "ferry/dirtylog/tracker.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/checkpoint_protocol.h"
#include "ferry/migrate/rate_limiter.h"
#include "ferry/migrate/stream_set.h"
#include "ferry/replication/replicator.h"
#include "epoch_log.h"

namespace ferry::replication {

using hypervisor::RunState;
using migrate::Frame;
using migrate::MsgType;

namespace {
double Ms(uint64_t ns) { return ns / 1e6; }
constexpr uint64_t kDiskChunk = 1u << 20;
constexpr uint32_t kMaxSyncRounds = 5;
constexpr uint64_t kSettledPages = 256;  // a first checkpoint this small costs ~1 ms to copy
// Checkpoints leave the guest's hot pages writable (DirtyTracker::KeepHotPages) and re-protect
// them every this many checkpoints: a page gone cold is sent for at most this many more epochs.
constexpr uint32_t kHotProbeEvery = 16;
}  // namespace

struct Replicator::Impl {
  Impl(hypervisor::Vm& v, const ReplicateOptions& opts) : vm(v), o(opts), controller(opts.epochs) {}

  Status Connect();
  Status InitialSync();
  Status SendDiskImage();
  Status SendDiskWrites(const std::vector<hypervisor::DiskWrite>& writes, uint32_t* frames);
  // Sends what `b` holds (if anything) as one kDiskWrites frame, counted in *frames.
  Status FlushDiskWrites(migrate::DiskWritesBuilder& b, uint32_t* frames);
  // One epoch; `final` (handover) leaves the guest paused.
  Status Checkpoint(uint64_t epoch, uint64_t* resume_ns, bool final = false);
  Status HandOver(uint64_t epoch);
  bool SleepUntil(uint64_t ns);  // false: Stop() was called
  void Run();
  Status RunEpochs();  // the initial sync, then checkpoints until stopped or failed
  bool StopRequested();
  void Finish(const Status& why);
  void FinishHandover(ReplicationState state, const Status& why);
  void SetState(ReplicationState s);

  hypervisor::Vm& vm;
  const ReplicateOptions o;
  EpochController controller;  // replication thread only
  std::unique_ptr<migrate::Channel> control;
  std::unique_ptr<migrate::StreamSet> streams;
  std::unique_ptr<dirtylog::DirtyTracker> tracker;
  std::unique_ptr<hypervisor::GuestMemory> staging;  // laid out like guest RAM; dirty pages copied in
  bool paused_here = false;                          // replication thread only
  uint32_t sync_disk_frames = 0;  // the image copy's frames: counted in the first checkpoint
  uint64_t sync_t0 = 0, sync_round_wire0 = 0;  // guarded by mu: for status()'s live progress
  std::thread thread;
  std::mutex stop_mu;  // serializes Stop(): joining one thread from two is undefined

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop_requested = false;   // guarded by mu
  bool keep_standby = false;     // guarded by mu: Stop(true): leave the standby its replica, hold output
  uint64_t handover_generation = 0;  // guarded by mu: non-zero once Handover() asked
  bool handover_told = false;    // guarded by mu: the standby was told to run the replica
  bool handed_over = false;      // guarded by mu
  HandoverStats handover;        // guarded by mu
  bool done = false;             // guarded by mu
  ReplicationStatus status;      // guarded by mu
  EpochLog log;                  // guarded by mu
  uint64_t last_acked_pause_ns = 0;  // guarded by mu
};

void Replicator::Impl::SetState(ReplicationState s) {
  std::lock_guard lock(mu);
  status.state = s;
  cv.notify_all();
}

Status Replicator::Impl::Connect() {
  FERRY_ASSIGN_OR_RETURN(migrate::Endpoint to, migrate::ParseEndpoint(o.to));
  if (o.streams == 0 || o.streams > migrate::kMaxStreams) {
    return InvalidArgument("--streams must be 1.." + std::to_string(migrate::kMaxStreams));
  }
  migrate::Session session{};
  FERRY_ASSIGN_OR_RETURN(control, migrate::ConnectPeer(to, o.transport, o.security, o.io_timeout_ms, migrate::Role::kControl,
                                                       0, migrate::Session{}, &session));
  migrate::Begin begin;
  begin.config = vm.config();
  begin.streams = o.streams;
  begin.generation = o.generation;
  begin.replication = true;
  FERRY_RETURN_IF_ERROR(control->Send(MsgType::kBegin, migrate::EncodeBegin(begin)));
  Frame f;
  FERRY_RETURN_IF_ERROR(control->Expect(MsgType::kReady, &f));
  std::vector<std::unique_ptr<migrate::Channel>> data;
  for (uint32_t i = 0; i < o.streams; ++i) {
    migrate::Session ignored;
    FERRY_ASSIGN_OR_RETURN(auto ch, migrate::ConnectPeer(to, o.transport, o.security, o.io_timeout_ms,
                                                         migrate::Role::kData, i, session, &ignored));
    data.push_back(std::move(ch));
  }
  migrate::EncoderOptions enc;
  enc.compress = o.compress;
  enc.xbzrle_cache_pages = o.xbzrle_cache_bytes / migrate::kPageBytes;
  streams = std::make_unique<migrate::StreamSet>(vm.memory(), std::move(data), enc);
  FERRY_ASSIGN_OR_RETURN(auto mem, hypervisor::GuestMemory::Create(vm.config().mem_bytes));
  staging = std::make_unique<hypervisor::GuestMemory>(std::move(mem));
  std::lock_guard lock(mu);
  status.standby = control->connection().PeerAddress();
  return Status::Ok();
}

// The whole image, before any checkpoint: the standby writes it straight to its copy. Writes
// the guest makes meanwhile are in the journal (started first), which the first checkpoint
// carries, so a chunk read mid-write is corrected there.
Status Replicator::Impl::SendDiskImage() {
  const std::string& path = vm.config().devices.disk_path;
  if (path.empty()) return Status::Ok();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open the disk image " + path + " to copy it");
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return ErrnoError("stat " + path);
  std::vector<uint8_t> chunk(kDiskChunk);
  migrate::DiskWritesBuilder b;
  uint64_t sent = 0;
  for (uint64_t off = 0; off < static_cast<uint64_t>(sb.st_size); off += kDiskChunk) {
    if (StopRequested()) return Status::Ok();  // InitialSync sees it too and ends early
    uint64_t len = std::min<uint64_t>(kDiskChunk, sb.st_size - off);
    ssize_t n = ::pread(fd.get(), chunk.data(), len, static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(len)) return ErrnoError("read the disk image " + path);
    if (!b.Fits(static_cast<uint32_t>(len))) FERRY_RETURN_IF_ERROR(FlushDiskWrites(b, &sync_disk_frames));
    bool zero = std::all_of(chunk.begin(), chunk.begin() + len, [](uint8_t c) { return c == 0; });
    if (zero) {
      b.AddZero(off, static_cast<uint32_t>(len));
    } else {
      b.Add(off, {chunk.data(), len});
      sent += len;
    }
  }
  FERRY_RETURN_IF_ERROR(FlushDiskWrites(b, &sync_disk_frames));
  std::lock_guard lock(mu);
  status.sync_disk_bytes = sent;
  return Status::Ok();
}

Status Replicator::Impl::FlushDiskWrites(migrate::DiskWritesBuilder& b, uint32_t* frames) {
  if (b.count() == 0) return Status::Ok();
  ++*frames;
  Status st = control->Send(MsgType::kDiskWrites, b.Finish());
  b.Start();
  return st;
}

Status Replicator::Impl::SendDiskWrites(const std::vector<hypervisor::DiskWrite>& writes, uint32_t* frames) {
  migrate::DiskWritesBuilder b;
  *frames = 0;
  for (const auto& w : writes) {
    // A guest request is at most FERRY_BLK_MAX_BYTES, well under a frame's limit.
    if (!b.Fits(static_cast<uint32_t>(w.data.size()))) FERRY_RETURN_IF_ERROR(FlushDiskWrites(b, frames));
    b.Add(w.offset, w.data);
  }
  return FlushDiskWrites(b, frames);
}

Status Replicator::Impl::InitialSync() {
  SetState(ReplicationState::kSyncing);
  uint64_t t0 = MonotonicNs();
  {
    std::lock_guard lock(mu);
    sync_t0 = t0;
  }
  vm.StartDiskJournal(o.disk_journal_bytes);
  FERRY_RETURN_IF_ERROR(SendDiskImage());
  // A stop asked during the sync ends it between disk chunks and between rounds (not within
  // a round): RunEpochs then stops as it would between checkpoints.
  if (StopRequested()) return Status::Ok();
  migrate::RateLimiter limiter(o.sync_bandwidth);
  if (o.sync_bandwidth) streams->SetLimiter(&limiter);
  struct Unlimit {
    migrate::StreamSet* s;
    ~Unlimit() { s->SetLimiter(nullptr); }
  } unlimit{streams.get()};
  FERRY_ASSIGN_OR_RETURN(tracker, dirtylog::DirtyTracker::Start(vm));
  FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet pending, tracker->Harvest());
  // Memory the guest never touched is a hole; the standby's fresh memory reads zero there too.
  Bitmap populated(pending.pages.size());
  FERRY_RETURN_IF_ERROR(vm.memory().ForEachPopulatedRange([&](uint64_t off, uint64_t len) {
    populated.SetRange(off / migrate::kPageBytes, (len + migrate::kPageBytes - 1) / migrate::kPageBytes);
  }));
  for (uint64_t w = 0; w < populated.word_count(); ++w) pending.pages.words()[w] &= populated.words()[w];
  // Live rounds until the dirty set stops shrinking: what is left goes in the first checkpoint.
  for (uint32_t round = 0; round < kMaxSyncRounds; ++round) {
    if (StopRequested()) return Status::Ok();
    uint64_t count = pending.Count();
    const uint64_t round_t0 = MonotonicNs();
    {
      std::lock_guard lock(mu);
      status.sync_round = round + 1;
      status.sync_round_pages = count;
      sync_round_wire0 = streams->wire_bytes();
    }
    FERRY_RETURN_IF_ERROR(streams->SendRound(pending.pages));
    FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet next, tracker->Harvest());
    uint64_t left = next.Count();
    {
      std::lock_guard lock(mu);
      status.sync_dirty_pages_per_s = left / std::max(1e-6, (MonotonicNs() - round_t0) / 1e9);
    }
    pending = std::move(next);
    if (left <= kSettledPages || left * 2 > count) break;
  }
  tracker->MergeBack(pending);  // the first checkpoint's harvest returns them
  tracker->KeepHotPages(kHotProbeEvery);
  std::lock_guard lock(mu);
  status.sync_ms = Ms(MonotonicNs() - t0);
  return Status::Ok();
}

Status Replicator::Impl::Checkpoint(uint64_t epoch, uint64_t* resume_ns, bool final) {
  const uint64_t t0 = MonotonicNs();
  // A VM the operator paused is checkpointed as it stands (the standby keeps hearing from
  // us), and left paused.
  RunState rs = vm.state();
  if (rs == RunState::kRunning) {
    FERRY_ASSIGN_OR_RETURN(auto p, vm.Pause());
    (void)p;
    paused_here = true;
  } else if (rs != RunState::kPaused) {
    return Status(ErrorCode::kAborted, std::string("the VM is ") + hypervisor::RunStateName(rs));
  }
  FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet dirty, tracker->Harvest());
  const uint64_t t_copy = MonotonicNs();
  const uint8_t* from = vm.memory().host();
  uint8_t* to = staging->host();
  const Bitmap& pages = dirty.pages;
  for (uint64_t w = 0; w < pages.word_count(); ++w) {
    for (uint64_t bits = pages.words()[w]; bits; bits &= bits - 1) {
      uint64_t off = (w * 64 + __builtin_ctzll(bits)) * migrate::kPageBytes;
      std::memcpy(to + off, from + off, migrate::kPageBytes);
    }
  }
  const uint64_t copy_ns = MonotonicNs() - t_copy;
  FERRY_ASSIGN_OR_RETURN(auto journal, vm.TakeDiskJournal());
  FERRY_ASSIGN_OR_RETURN(hypervisor::VmState state, vm.SaveState());
  if (epoch == 1) vm.StartOutputBuffering();
  const uint64_t out_epoch = vm.SealOutput();  // what the guest sent in this epoch waits for its ack
  if (paused_here && !final) {
    // Refused because a fence sealed the VM meanwhile: the fence holds it paused now, and
    // replication goes on (a failure here would end the standby the HA manager may promote).
    if (Status r = vm.Resume(); !r.ok() && !vm.sealed()) return r;
    paused_here = false;
  }
  const uint64_t t1 = MonotonicNs();
  *resume_ns = t1;

  const uint64_t bytes0 = streams->wire_bytes() + control->bytes_sent();
  uint32_t disk_frames = 0;
  FERRY_RETURN_IF_ERROR(SendDiskWrites(journal, &disk_frames));
  FERRY_RETURN_IF_ERROR(streams->SendRound(pages, staging->host()));
  FERRY_ASSIGN_OR_RETURN(auto frames, streams->EndEpoch(epoch));
  if (epoch == 1) disk_frames += sync_disk_frames;
  migrate::CheckpointMsg msg{epoch, frames, disk_frames, hypervisor::EncodeVmState(state)};
  FERRY_RETURN_IF_ERROR(control->Send(MsgType::kCheckpoint, migrate::EncodeCheckpoint(msg)));
  Frame f;
  FERRY_RETURN_IF_ERROR(control->Expect(MsgType::kCheckpointAck, &f));
  FERRY_ASSIGN_OR_RETURN(uint64_t acked, migrate::DecodeEpoch(f.payload));
  if (acked != epoch) return Corrupt("the standby acknowledged checkpoint " + std::to_string(acked) + ", not " + std::to_string(epoch));
  const uint64_t t2 = MonotonicNs();
  vm.ReleaseOutput(out_epoch);

  EpochStats e;
  e.epoch = epoch;
  e.pause_ms = Ms(t1 - t0);
  e.copy_ms = Ms(copy_ns);
  e.pages = dirty.Count();
  e.hot_pages = tracker->last_stats().hot_pages;
  for (const auto& w : journal) e.disk_bytes += w.data.size();
  e.wire_bytes = streams->wire_bytes() + control->bytes_sent() - bytes0;
  e.ship_ms = Ms(t2 - t1);
  e.lag_ms = Ms(t2 - t0);
  EpochPlan plan = controller.Next(EpochSample{e.pause_ms, e.ship_ms});
  e.interval_ms = plan.interval_ms;
  e.throttle = plan.throttle;
  if (plan.throttle != vm.throttle(0)) FERRY_RETURN_IF_ERROR(vm.SetThrottle(-1, plan.throttle));
  std::lock_guard lock(mu);
  log.Add(e);
  status.state = ReplicationState::kProtected;
  status.epochs = epoch;
  status.interval_ms = plan.interval_ms;
  status.throttle = plan.throttle;
  status.lagging_epochs += plan.lagging ? 1 : 0;
  status.wire_bytes = streams->wire_bytes() + control->bytes_sent();
  last_acked_pause_ns = t0;
  cv.notify_all();
  return Status::Ok();
}

// The final checkpoint with the guest left paused, then the standby told to run it.
Status Replicator::Impl::HandOver(uint64_t epoch) {
  const uint64_t t0 = MonotonicNs();
  uint64_t generation;
  {
    std::lock_guard lock(mu);
    generation = handover_generation;
  }
  uint64_t resume_ns = 0;
  FERRY_RETURN_IF_ERROR(Checkpoint(epoch, &resume_ns, /*final=*/true));
  const uint64_t t_acked = MonotonicNs();
  FERRY_RETURN_IF_ERROR(control->Send(MsgType::kHandover, migrate::EncodeEpoch(generation)));
  {
    std::lock_guard lock(mu);
    handover_told = true;
  }
  Frame f;
  FERRY_RETURN_IF_ERROR(control->Expect(MsgType::kHandoverDone, &f));
  std::lock_guard lock(mu);
  handed_over = true;
  handover.epoch = epoch;
  handover.generation = generation;
  handover.final_ship_ms = Ms(t_acked - resume_ns);
  handover.downtime_ms = Ms(MonotonicNs() - t0);
  return Status::Ok();
}

bool Replicator::Impl::StopRequested() {
  std::lock_guard lock(mu);
  return stop_requested;
}

bool Replicator::Impl::SleepUntil(uint64_t ns) {
  std::unique_lock lock(mu);
  for (;;) {
    if (stop_requested) return false;
    if (handover_generation) return true;
    uint64_t now = MonotonicNs();
    if (now >= ns) return true;
    cv.wait_for(lock, std::chrono::nanoseconds(ns - now));
  }
}

void Replicator::Impl::Run() {
  // An exception (out of memory in a checkpoint) ends replication as any error does: Finish
  // resumes a guest paused here and fails the standby, instead of std::terminate.
  Status st = Guarded("replication", [this] { return RunEpochs(); });
  (void)Guarded("ending replication", [&] { Finish(st); });
}

Status Replicator::Impl::RunEpochs() {
  FERRY_RETURN_IF_ERROR(InitialSync());
  uint64_t next_pause = MonotonicNs();
  for (uint64_t epoch = 1;; ++epoch) {
    if (!SleepUntil(next_pause)) return Status::Ok();
    bool hand_over;
    {
      std::lock_guard lock(mu);
      hand_over = handover_generation != 0;
    }
    uint64_t resume_ns = 0;
    if (hand_over) {
      // One checkpoint right away first, like a last pre-copy round: the final one, taken
      // with the guest stopped, then holds only what was dirtied while that one shipped.
      FERRY_RETURN_IF_ERROR(Checkpoint(epoch, &resume_ns));
      return HandOver(epoch + 1);
    }
    FERRY_RETURN_IF_ERROR(Checkpoint(epoch, &resume_ns));
    next_pause = resume_ns + static_cast<uint64_t>(controller.interval_ms() * 1e6);
  }
}

void Replicator::Impl::Finish(const Status& why) {
  bool stopped, handed, told, keep;
  {
    std::lock_guard lock(mu);
    handed = handed_over && why.ok();
    told = handover_told;
    stopped = stop_requested && why.ok() && !handed;
    keep = stopped && keep_standby;
  }
  if (handed) {
    FinishHandover(ReplicationState::kHandedOver, why);
    return;
  }
  if (told) {  // the standby may run the replica: this guest must never run again here
    FinishHandover(ReplicationState::kHandoverIndeterminate, why);
    return;
  }
  if (keep || (!stopped && vm.sealed())) {
    // Nothing said: an abort or an error would end the standby; a closed stream leaves it
    // its last committed checkpoint, promotable. So also when the VM was fenced: the HA
    // manager fenced it to promote the standby, which it could not if the standby had ended.
  } else if (stopped) {
    control->set_timeout_ms(2000);
    // Tell the standby first and let it hang up, so it reads the reason rather than seeing a
    // data stream close under it (which would look like a lost primary).
    if (control->Send(MsgType::kAbort, migrate::EncodeReason("replication stopped on the primary")).ok()) {
      Frame f;
      (void)control->Receive(&f);
    }
  } else {
    std::string reason = why.message();
    streams->FailAll(reason);
    control->Fail(reason);
  }
  streams->CloseAll();
  control->Close();
  if (tracker) (void)tracker->Stop();
  vm.StopDiskJournal();
  const bool hold = keep || (!stopped && o.hold_output_on_failure);
  if (!hold) vm.StopOutputBuffering();  // the guest runs on unprotected: its output leaves again
  (void)vm.SetThrottle(-1, 0);
  if (paused_here) (void)vm.Resume();
  std::string standby;
  {
    std::lock_guard lock(mu);
    status.state = stopped ? ReplicationState::kStopped : ReplicationState::kFailed;
    status.output_held = hold;
    if (!stopped) status.error = why.message();
    status.throttle = 0;
    standby = status.standby;
    done = true;
    cv.notify_all();
  }
  if (keep) {
    std::fprintf(stderr, "ferry: replication to %s stopped; the standby keeps its replica and the VM's output is held\n",
                 standby.c_str());
  } else if (stopped) {
    std::fprintf(stderr, "ferry: replication to %s stopped\n", standby.c_str());
  } else if (hold) {
    std::fprintf(stderr, "ferry: replication to %s failed: %s; the VM's output is held until the HA agent decides\n",
                 standby.c_str(), why.message().c_str());
  } else {
    std::fprintf(stderr, "ferry: replication to %s failed: %s; the VM runs on here, unprotected\n", standby.c_str(),
                 why.message().c_str());
  }
}

// After a handover (done or unanswered) the guest stays paused and its output stays held:
// the replica is, or may be, the one running.
void Replicator::Impl::FinishHandover(ReplicationState state, const Status& why) {
  if (!why.ok()) streams->FailAll(why.message());
  streams->CloseAll();
  control->Close();
  if (tracker) (void)tracker->Stop();
  vm.StopDiskJournal();
  std::lock_guard lock(mu);
  status.state = state;
  if (!why.ok()) status.error = why.message();
  done = true;
  cv.notify_all();
}

Replicator::Replicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Replicator::~Replicator() { Stop(); }

Result<std::unique_ptr<Replicator>> Replicator::Start(hypervisor::Vm& vm, const ReplicateOptions& options) {
  if (vm.state() != RunState::kRunning) return InvalidArgument("only a running VM can be replicated");
  auto impl = std::make_unique<Impl>(vm, options);
  impl->status.state = ReplicationState::kConnecting;
  impl->status.generation = options.generation;
  impl->status.interval_ms = options.epochs.interval_ms;
  Status st = impl->Connect();
  if (!st.ok()) {
    if (impl->control) impl->control->Fail(st.message());
    return st.Annotate("replication to " + options.to);
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<Replicator>(new Replicator(std::move(impl)));
}

Status Replicator::WaitProtected(uint64_t timeout_ms) {
  std::unique_lock lock(impl_->mu);
  bool ready = impl_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                  [this] { return impl_->status.epochs > 0 || impl_->done; });
  if (impl_->status.epochs > 0) return Status::Ok();
  if (!ready) return Timeout("the standby did not acknowledge a first checkpoint in time");
  return impl_->status.error.empty() ? Status(ErrorCode::kAborted, "replication was stopped")
                                     : Status(ErrorCode::kAborted, impl_->status.error);
}

void Replicator::ReleaseHeldOutput() {
  std::lock_guard lock(impl_->mu);
  if (!impl_->done || !impl_->status.output_held) return;
  impl_->vm.StopOutputBuffering();
  impl_->status.output_held = false;
}

Result<HandoverStats> Replicator::Handover(uint64_t generation) {
  if (generation == 0) return InvalidArgument("a handover needs a generation");
  std::unique_lock lock(impl_->mu);
  if (impl_->done) return Status(ErrorCode::kAborted, std::string("replication has ended (") + ReplicationStateName(impl_->status.state) + ")");
  if (impl_->status.epochs == 0) return Status(ErrorCode::kBusy, "the standby holds no checkpoint yet");
  if (impl_->handover_generation) return Status(ErrorCode::kBusy, "a handover is already running");
  impl_->handover_generation = generation;
  impl_->cv.notify_all();
  impl_->cv.wait(lock, [&] { return impl_->done; });
  if (impl_->handed_over) return impl_->handover;
  std::string why = "handover to " + impl_->status.standby + " failed: " + impl_->status.error;
  if (impl_->handover_told) {
    return Status(ErrorCode::kIndeterminate, why + "; the standby may be running the VM, so it stays paused here");
  }
  return Status(ErrorCode::kAborted, why + "; the VM runs on here, unprotected");
}

void Replicator::Stop(bool keep_standby) {
  if (!impl_) return;
  // An API's replicate_stop and the VM's exit may stop it at once: one joins, the other waits.
  std::lock_guard stopping(impl_->stop_mu);
  if (!impl_->thread.joinable()) return;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop_requested = true;
    impl_->keep_standby = keep_standby;
    impl_->cv.notify_all();
  }
  impl_->thread.join();
}

bool Replicator::running() const {
  std::lock_guard lock(impl_->mu);
  return !impl_->done;
}

ReplicationStatus Replicator::status() const {
  std::lock_guard lock(impl_->mu);
  ReplicationStatus s = impl_->status;
  impl_->log.Summarize(&s);
  if (impl_->last_acked_pause_ns && !impl_->done) s.behind_ms = Ms(MonotonicNs() - impl_->last_acked_pause_ns);
  if (s.state == ReplicationState::kSyncing && impl_->streams) {
    // Channel byte counters are atomics: safe to read while the sync thread sends.
    const uint64_t wire = impl_->streams->wire_bytes();
    s.sync_round_sent_bytes = wire - std::min(wire, impl_->sync_round_wire0);
    const double secs = (MonotonicNs() - impl_->sync_t0) / 1e9;
    if (secs > 0) s.sync_rate_bytes_per_s = wire / secs;
    s.wire_bytes = wire + impl_->control->bytes_sent();
  }
  return s;
}

}  // namespace ferry::replication
