// Migrate(): the source's state machine (PROTOCOL.md): connect and authenticate, Begin, data
// streams, pre-copy rounds under the convergence controller, stop-and-copy, two-phase commit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/dirtylog/tracker.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/migration.h"
#include "ferry/migrate/postcopy_protocol.h"
#include "ferry/migrate/postcopy_source.h"
#include "ferry/migrate/stream_set.h"

namespace ferry::migrate {
namespace {

using hypervisor::Vm;

double Ms(uint64_t ns) { return ns / 1e6; }
double MBs(double bytes_per_s) { return bytes_per_s / 1e6; }

// Calls `progress` every 250 ms with the bytes sent so far, while a round runs.
class ProgressTicker {
 public:
  ProgressTicker(const ProgressFn& fn, const StreamSet& streams, Progress base)
      : fn_(fn), streams_(streams), base_(std::move(base)) {
    if (!fn_) return;
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; })) {
        Progress p = base_;
        p.sent_bytes = streams_.wire_bytes();
        (void)Guarded("progress report", [&] { fn_(p); });  // a caller's printer must not end the VMM
      }
    });
  }
  ~ProgressTicker() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  const ProgressFn& fn_;
  const StreamSet& streams_;
  Progress base_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
  std::thread thread_;
};

Result<std::unique_ptr<Channel>> Open(const Endpoint& to, const MigrateOptions& o, Role role, uint32_t stream,
                                      const Session& session, Session* assigned) {
  return ConnectPeer(to, o.transport, o.security, o.io_timeout_ms, role, stream, session, assigned);
}

// Everything Migrate() holds; Fail() undoes what the source changed so the VM runs on.
class SourceMigration {
 public:
  SourceMigration(Vm& vm, const MigrateOptions& o, const ProgressFn& progress)
      : vm_(vm), o_(o), progress_(progress), controller_(o.convergence) {}

  Result<MigrationStats> Run();

 private:
  Status Connect();
  Status StartTracking();
  Status PreCopy();
  Status DrainAndPause(const std::string& phase);
  Status StopAndCopy();
  Status Commit();
  Status Switchover();
  Status PostCopy();
  Status Fail(const Status& why);
  void Report(const std::string& phase, uint64_t remaining, const Verdict* v);
  void ReadVerification();

  Vm& vm_;
  const MigrateOptions& o_;
  const ProgressFn& progress_;
  ConvergenceController controller_;
  MigrationStats stats_;
  std::unique_ptr<Channel> control_;
  std::unique_ptr<StreamSet> streams_;
  std::unique_ptr<Channel> requests_;  // post-copy's page requests (modes postcopy and auto)
  std::unique_ptr<PostcopyPageServer> server_;  // post-copy: answers them from the switchover on
  bool switch_to_postcopy_ = false;    // the controller (or mode postcopy) chose post-copy
  Bitmap outstanding_;                 // post-copy: pages the destination does not hold
  bool committed_ = false;             // the source may never run again
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<dirtylog::DirtyTracker> tracker_;
  uint64_t start_ns_ = 0;
  uint64_t pause_ns_ = 0;  // when the stop-and-copy pause was requested
  bool paused_ = false;
  uint64_t guest_pause_ns_ = 0;  // the guest's clock when it stopped here
  dirtylog::DirtySet pending_;  // harvested, not yet sent
  uint64_t pending_since_ns_ = 0;
};

void SourceMigration::Report(const std::string& phase, uint64_t remaining, const Verdict* v) {
  if (!progress_) return;
  Progress p;
  p.phase = phase;
  p.sent_bytes = streams_ ? streams_->wire_bytes() : 0;
  p.remaining_pages = remaining;
  if (v) {
    p.rate_mb_s = MBs(v->bandwidth_bytes_s);
    p.dirty_mb_s = MBs(v->dirty_bytes_s);
    p.predicted_downtime_ms = v->predicted_downtime_ms;
    p.throttle = v->throttle;
  }
  progress_(p);
}

Status SourceMigration::Connect() {
  FERRY_ASSIGN_OR_RETURN(Endpoint to, ParseEndpoint(o_.to));
  if (o_.streams == 0 || o_.streams > kMaxStreams) {
    return InvalidArgument("--streams must be 1.." + std::to_string(kMaxStreams));
  }
  Session session{};
  FERRY_ASSIGN_OR_RETURN(control_, Open(to, o_, Role::kControl, 0, Session{}, &session));
  Begin begin;
  begin.config = vm_.config();
  begin.streams = o_.streams;
  begin.verify = o_.verify;
  begin.generation = o_.generation;
  begin.postcopy = o_.mode != MigrationMode::kPrecopy;
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kBegin, EncodeBegin(begin)));
  Frame f;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kReady, &f));
  limiter_ = std::make_unique<RateLimiter>(o_.bandwidth);
  std::vector<std::unique_ptr<Channel>> data;
  for (uint32_t i = 0; i < o_.streams; ++i) {
    Session ignored;
    FERRY_ASSIGN_OR_RETURN(auto ch, Open(to, o_, Role::kData, i, session, &ignored));
    ch->set_limiter(limiter_.get());
    data.push_back(std::move(ch));
  }
  if (begin.postcopy) {
    // Its own connection, outside the rate limit: a faulting vCPU waits on every request.
    Session ignored;
    FERRY_ASSIGN_OR_RETURN(requests_, Open(to, o_, Role::kData, o_.streams, session, &ignored));
  }
  EncoderOptions enc;
  enc.compress = o_.compress;
  enc.xbzrle_cache_pages = o_.xbzrle_cache_bytes / kPageBytes;
  streams_ = std::make_unique<StreamSet>(vm_.memory(), std::move(data), enc);
  stats_.destination = control_->connection().PeerAddress();
  return Status::Ok();
}

Status SourceMigration::StartTracking() {
  FERRY_ASSIGN_OR_RETURN(tracker_, dirtylog::DirtyTracker::Start(vm_));
  FERRY_ASSIGN_OR_RETURN(pending_, tracker_->Harvest());
  pending_since_ns_ = MonotonicNs();
  // Round 0: memory the guest never touched is a hole in the memfd; the destination's fresh
  // memory reads as zero there too, so holes are neither read (which would allocate them)
  // nor sent.
  Bitmap populated(pending_.pages.size());
  FERRY_RETURN_IF_ERROR(vm_.memory().ForEachPopulatedRange([&](uint64_t off, uint64_t len) {
    populated.SetRange(off / kPageBytes, (len + kPageBytes - 1) / kPageBytes);
  }));
  for (uint64_t w = 0; w < populated.word_count(); ++w) pending_.pages.words()[w] &= populated.words()[w];
  return Status::Ok();
}

Status SourceMigration::PreCopy() {
  if (o_.mode == MigrationMode::kPostcopy) {
    // Post-copy at once: no pre-copy round; every page the guest ever wrote follows the VM.
    switch_to_postcopy_ = true;
    stats_.postcopy.reason = "--mode postcopy";
    return Status::Ok();
  }
  for (uint32_t round = 0;; ++round) {
    uint64_t count = pending_.Count();
    Report("round " + std::to_string(round), count, nullptr);
    uint64_t bytes0 = streams_->wire_bytes(), t0 = MonotonicNs();
    Status st;
    {
      Progress base;
      base.phase = "round " + std::to_string(round);
      base.remaining_pages = count;
      ProgressTicker ticker(progress_, *streams_, base);
      st = streams_->SendRound(pending_.pages);
    }
    if (!st.ok()) return st;
    uint64_t t1 = MonotonicNs();
    FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet next, tracker_->Harvest());
    uint64_t t2 = MonotonicNs();
    RoundSample s;
    s.round = round;
    s.pages_sent = count;
    s.wire_bytes = streams_->wire_bytes() - bytes0;
    s.send_ns = t1 - t0;
    s.dirty_pages = next.Count();
    s.dirty_window_ns = t2 - pending_since_ns_;
    s.elapsed_ns = t2 - start_ns_;
    // The stop costs a pause, one more harvest, the state and a commit round trip: measured
    // parts plus a small allowance for the destination's resume.
    s.fixed_ms = Ms(tracker_->last_stats().total_ns) + 2.0;
    pending_ = std::move(next);
    pending_since_ns_ = t2;
    Verdict v = controller_.Next(s);
    stats_.per_round.push_back(RoundStats{round, count, s.wire_bytes, Ms(s.send_ns), s.dirty_pages,
                                          MBs(v.dirty_bytes_s), MBs(v.bandwidth_bytes_s), v.predicted_downtime_ms,
                                          v.throttle});
    stats_.rounds = round + 1;
    Report("round " + std::to_string(round) + " done", s.dirty_pages, &v);
    FERRY_LOG_DEBUG("migrate: round %u: %llu pages, %.1f MB in %.1f ms; %s", round,
                    static_cast<unsigned long long>(count), s.wire_bytes / 1e6, Ms(s.send_ns), v.reason.c_str());
    if (v.decision == Decision::kStopAndCopy) return Status::Ok();
    if (v.decision == Decision::kPostcopy) {
      switch_to_postcopy_ = true;
      stats_.postcopy.reason = v.reason;
      return Status::Ok();
    }
    if (v.decision == Decision::kAbort) return Timeout("did not converge: " + v.reason);
    if (v.throttle != vm_.throttle(0)) FERRY_RETURN_IF_ERROR(vm_.SetThrottle(-1, v.throttle));
  }
}

// Socket buffers hold megabytes that the destination has not landed yet. Drains them while
// the guest still runs, so the stop pays only for the final dirty set (whatever the guest
// dirties meanwhile is in the final harvest); then pauses the guest and merges that harvest
// into pending_.
Status SourceMigration::DrainAndPause(const std::string& phase) {
  uint64_t s0 = MonotonicNs();
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kSync, EncodeSync(streams_->frames_sent())));
  Frame synced;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kSynced, &synced));
  stats_.drain_ms = Ms(MonotonicNs() - s0);
  Report(phase, pending_.Count(), nullptr);
  pause_ns_ = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(auto pause, vm_.Pause());
  paused_ = true;
  guest_pause_ns_ = vm_.GuestNs();
  stats_.pause_ms = Ms(pause.latency_ns);
  uint64_t t0 = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet last, tracker_->Harvest());
  pending_.pages.MergeFrom(last.pages);
  stats_.final_harvest_ms = Ms(MonotonicNs() - t0);
  return Status::Ok();
}

Status SourceMigration::StopAndCopy() {
  FERRY_RETURN_IF_ERROR(DrainAndPause("stop-and-copy"));
  stats_.final_pages = pending_.Count();
  uint64_t t1 = MonotonicNs();
  FERRY_RETURN_IF_ERROR(streams_->SendRound(pending_.pages));
  uint64_t t2 = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(hypervisor::VmState state, vm_.SaveState());
  FERRY_ASSIGN_OR_RETURN(auto frames, streams_->Finish());
  StateMsg msg{frames, hypervisor::EncodeVmState(state)};
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kState, EncodeState(msg)));
  uint64_t t3 = MonotonicNs();
  Frame f;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kPrepared, &f));
  uint64_t t4 = MonotonicNs();
  stats_.stop_copy_ms = Ms(t4 - pause_ns_);
  stats_.final_send_ms = Ms(t2 - t1);
  stats_.state_ms = Ms(t3 - t2);
  stats_.prepare_wait_ms = Ms(t4 - t3);
  return Status::Ok();
}

Status SourceMigration::Commit() {
  Report("commit", 0, nullptr);
  Status sent = control_->Send(MsgType::kCommit);
  Frame f;
  Status st = sent.ok() ? control_->Expect(MsgType::kStarted, &f) : sent;
  uint64_t started_ns = MonotonicNs();
  if (!st.ok()) {
    // The commit may or may not have reached the destination: running here again could make
    // two copies. Stay paused and say so.
    return Status(ErrorCode::kIndeterminate,
                  "commit sent to " + stats_.destination + " but its answer was lost (" + st.message() +
                      "); the VM stays paused here: check the destination before resuming it");
  }
  auto started = DecodeStarted(f.payload);
  if (!started.ok()) {
    return Status(ErrorCode::kIndeterminate, "commit acknowledged with a malformed message: " + started.status().message());
  }
  stats_.downtime_ms = Ms(started_ns - pause_ns_);
  stats_.dest_resume_ms = Ms(started->resume_ns);
  // What the guest's own clock says passed between its last instruction here and its first
  // there: the pause as the guest experiences it.
  if (started->guest_resume_ns > guest_pause_ns_) stats_.guest_clock_gap_ms = Ms(started->guest_resume_ns - guest_pause_ns_);
  if (o_.verify) ReadVerification();
  return Status::Ok();
}

void SourceMigration::ReadVerification() {
  Frame vf;
  control_->set_timeout_ms(std::max<uint64_t>(o_.io_timeout_ms, 120000));  // a full pass over guest RAM
  Status vs = control_->Expect(MsgType::kVerifyResult, &vf);
  auto vr = vs.ok() ? DecodeVerifyResult(vf.payload) : Result<VerifyResult>(vs);
  stats_.verified = true;
  if (vr.ok()) {
    stats_.verify_passed = vr->passed;
    stats_.verify_report = vr->report;
  } else {
    stats_.verify_report = "no verification result: " + vr.status().message();
  }
}

// Post-copy's switchover: one pause moves vCPU and device state and names the pages the
// destination must not trust (never sent, or changed since). The destination runs the VM
// with its output and disk writes held; this copy stays paused, able to resume, until the
// destination holds every page (PostCopy).
Status SourceMigration::Switchover() {
  FERRY_RETURN_IF_ERROR(DrainAndPause("switchover"));
  outstanding_ = pending_.pages;
  uint64_t t1 = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(hypervisor::VmState state, vm_.SaveState());
  // Serve pages from now on: loading the state may already touch some on the destination.
  server_ = std::make_unique<PostcopyPageServer>(*requests_, vm_.memory().host(), vm_.memory().size() / kPageBytes,
                                                 [this] { control_->Close(); });
  PostcopyStateMsg msg{streams_->frames_sent(), outstanding_, hypervisor::EncodeVmState(state)};
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kPostcopyState, EncodePostcopyState(msg)));
  uint64_t t2 = MonotonicNs();
  Frame f;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kPrepared, &f));
  uint64_t t3 = MonotonicNs();
  stats_.state_ms = Ms(t2 - t1);
  stats_.prepare_wait_ms = Ms(t3 - t2);
  stats_.stop_copy_ms = Ms(t3 - pause_ns_);
  // Unlike pre-copy's, this commit is not the point of no return: the destination releases
  // nothing before our post-copy end, so a lost answer still lets this copy resume.
  Report("commit", outstanding_.Count(), nullptr);
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kCommit));
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kStarted, &f));
  uint64_t started_ns = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(Started started, DecodeStarted(f.payload));
  stats_.downtime_ms = Ms(started_ns - pause_ns_);
  stats_.dest_resume_ms = Ms(started.resume_ns);
  if (started.guest_resume_ns > guest_pause_ns_) stats_.guest_clock_gap_ms = Ms(started.guest_resume_ns - guest_pause_ns_);
  return Status::Ok();
}

Status SourceMigration::PostCopy() {
  Report("post-copy", outstanding_.Count(), nullptr);
  stats_.postcopy.used = true;
  PostcopySourceLinks links{streams_.get(), requests_.get(), control_.get(), server_.get(),
                            [this] { return vm_.SealForHandOff("migrated to " + o_.to + " (post-copy)"); }};
  PostcopySourceResult r = RunPostcopySource(outstanding_, links, o_.io_timeout_ms);
  PostcopyFigures& p = stats_.postcopy;
  p.duration_ms = r.stats.duration_ms;
  p.background_ms = r.stats.background_ms;
  p.outstanding_pages = r.stats.outstanding_pages;
  p.faults = r.stats.destination.faults;
  p.requested_pages = r.stats.served.pages;
  p.placed_pages = r.stats.destination.placed_pages;
  p.fault_p50_us = r.stats.destination.fault_p50_us;
  p.fault_p99_us = r.stats.destination.fault_p99_us;
  p.fault_max_us = r.stats.destination.fault_max_us;
  p.held_frames = r.stats.destination.held_frames;
  p.held_disk_bytes = r.stats.destination.held_disk_bytes;
  if (r.outcome != PostcopyOutcome::kFailed) committed_ = true;
  return r.why;
}

Status SourceMigration::Fail(const Status& why) {
  // Every stream says why before it closes, so the destination reports the cause rather
  // than a bare end of stream.
  if (streams_) streams_->FailAll(why.message());
  if (requests_) requests_->Close();
  server_.reset();
  if (control_) {
    control_->set_timeout_ms(1000);
    (void)control_->Send(MsgType::kAbort, EncodeReason(why.message()));
    control_->Close();
  }
  if (tracker_) (void)tracker_->Stop();
  (void)vm_.SetThrottle(-1, 0);
  if (paused_ && !vm_.sealed()) {  // sealed: fenced meanwhile, it stays paused
    if (Status st = vm_.Resume(); !st.ok()) return Internal(why.message() + "; and resuming the source failed: " + st.message());
  }
  return why;
}

Result<MigrationStats> SourceMigration::Run() {
  start_ns_ = MonotonicNs();
  if (vm_.state() != hypervisor::RunState::kRunning) return InvalidArgument("only a running VM can be migrated");
  stats_.mode = MigrationModeName(o_.mode);
  Report("connect", 0, nullptr);
  Status st = Connect();
  if (st.ok()) st = StartTracking();
  if (st.ok()) st = PreCopy();
  if (st.ok() && switch_to_postcopy_) {
    st = Switchover();
    if (st.ok()) st = PostCopy();
    if (!st.ok() && !committed_) return Fail(st.Annotate("post-copy migration to " + o_.to + " failed; the VM resumes here"));
    if (st.ok() && o_.verify) ReadVerification();
  } else {
    if (st.ok()) st = StopAndCopy();
    // The point of no return: a fence that came during the migration keeps the VM here, sealed.
    if (st.ok() && !vm_.SealForHandOff("migrating to " + o_.to)) {
      st = Status(ErrorCode::kAborted, "the VM was fenced during the migration: it is not handed over and stays fenced here");
    }
    if (!st.ok()) return Fail(st.Annotate("migration to " + o_.to + " failed"));
    st = Commit();
  }
  // Committed (or indeterminate): the source never runs this guest again.
  if (tracker_) (void)tracker_->Stop();
  streams_->CloseAll();
  if (requests_) requests_->Close();
  control_->Close();
  if (!st.ok()) return st;
  auto c = streams_->counts();
  stats_.pages_zero = c.zero;
  stats_.pages_raw = c.raw;
  stats_.pages_zstd = c.zstd;
  stats_.pages_xbzrle = c.xbzrle;
  stats_.pages_unchanged = streams_->pages_unchanged();
  stats_.wire_bytes = streams_->wire_bytes() + control_->bytes_sent();
  stats_.ram_bytes = vm_.config().mem_bytes;
  stats_.max_throttle = controller_.max_throttle();
  stats_.converged = true;
  stats_.total_ms = Ms(MonotonicNs() - start_ns_);
  return stats_;
}

}  // namespace

const char* MigrationModeName(MigrationMode m) {
  switch (m) {
    case MigrationMode::kPrecopy: return "precopy";
    case MigrationMode::kPostcopy: return "postcopy";
    case MigrationMode::kAuto: return "auto";
  }
  return "precopy";
}

std::optional<MigrationMode> ParseMigrationMode(std::string_view name) {
  for (MigrationMode m : {MigrationMode::kPrecopy, MigrationMode::kPostcopy, MigrationMode::kAuto}) {
    if (name == MigrationModeName(m)) return m;
  }
  return std::nullopt;
}

Result<MigrationStats> Migrate(Vm& vm, const MigrateOptions& options, const ProgressFn& progress) {
  if (options.mode == MigrationMode::kAuto) {
    MigrateOptions o = options;
    o.convergence.postcopy = true;
    SourceMigration m(vm, o, progress);
    return m.Run();
  }
  SourceMigration m(vm, options, progress);
  return m.Run();
}

}  // namespace ferry::migrate
