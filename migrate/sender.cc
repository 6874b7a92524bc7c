// Migrate(): the source's state machine (PROTOCOL.md): connect and authenticate, Begin, data
// streams, pre-copy rounds under the convergence controller, stop-and-copy, two-phase commit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/dirtylog/tracker.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/migration.h"
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
        fn_(p);
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
  Status PreCopy();
  Status StopAndCopy();
  Status Commit();
  Status Fail(const Status& why);
  void Report(const std::string& phase, uint64_t remaining, const Verdict* v);

  Vm& vm_;
  const MigrateOptions& o_;
  const ProgressFn& progress_;
  ConvergenceController controller_;
  MigrationStats stats_;
  std::unique_ptr<Channel> control_;
  std::unique_ptr<StreamSet> streams_;
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
  EncoderOptions enc;
  enc.compress = o_.compress;
  enc.xbzrle_cache_pages = o_.xbzrle_cache_bytes / kPageBytes;
  streams_ = std::make_unique<StreamSet>(vm_.memory(), std::move(data), enc);
  stats_.destination = control_->connection().PeerAddress();
  return Status::Ok();
}

Status SourceMigration::PreCopy() {
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
    if (v.decision == Decision::kAbort) return Timeout("did not converge: " + v.reason);
    if (v.throttle != vm_.throttle(0)) FERRY_RETURN_IF_ERROR(vm_.SetThrottle(-1, v.throttle));
  }
}

Status SourceMigration::StopAndCopy() {
  // Socket buffers hold megabytes that the destination has not landed yet. Drain them while
  // the guest still runs, so the stop pays only for the final dirty set; whatever the guest
  // dirties meanwhile is in the final harvest.
  uint64_t s0 = MonotonicNs();
  FERRY_RETURN_IF_ERROR(control_->Send(MsgType::kSync, EncodeSync(streams_->frames_sent())));
  Frame synced;
  FERRY_RETURN_IF_ERROR(control_->Expect(MsgType::kSynced, &synced));
  stats_.drain_ms = Ms(MonotonicNs() - s0);
  Report("stop-and-copy", pending_.Count(), nullptr);
  pause_ns_ = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(auto pause, vm_.Pause());
  paused_ = true;
  guest_pause_ns_ = vm_.GuestNs();
  stats_.pause_ms = Ms(pause.latency_ns);
  uint64_t t0 = MonotonicNs();
  FERRY_ASSIGN_OR_RETURN(dirtylog::DirtySet last, tracker_->Harvest());
  pending_.pages.MergeFrom(last.pages);
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
  stats_.final_harvest_ms = Ms(t1 - t0);
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
  if (o_.verify) {
    Frame vf;
    uint64_t saved = o_.io_timeout_ms;
    control_->set_timeout_ms(std::max<uint64_t>(saved, 120000));  // a full pass over guest RAM
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
  return Status::Ok();
}

Status SourceMigration::Fail(const Status& why) {
  // Every stream says why before it closes, so the destination reports the cause rather
  // than a bare end of stream.
  if (streams_) streams_->FailAll(why.message());
  if (control_) {
    control_->set_timeout_ms(1000);
    (void)control_->Send(MsgType::kAbort, EncodeReason(why.message()));
    control_->Close();
  }
  if (tracker_) (void)tracker_->Stop();
  (void)vm_.SetThrottle(-1, 0);
  if (paused_) {
    if (Status st = vm_.Resume(); !st.ok()) return Internal(why.message() + "; and resuming the source failed: " + st.message());
  }
  return why;
}

Result<MigrationStats> SourceMigration::Run() {
  start_ns_ = MonotonicNs();
  if (vm_.state() != hypervisor::RunState::kRunning) return InvalidArgument("only a running VM can be migrated");
  Report("connect", 0, nullptr);
  Status st = Connect();
  if (st.ok()) st = PreCopy();
  if (st.ok()) st = StopAndCopy();
  if (!st.ok()) return Fail(st.Annotate("migration to " + o_.to + " failed"));
  st = Commit();
  // Committed (or indeterminate): the source never runs this guest again.
  if (tracker_) (void)tracker_->Stop();
  streams_->CloseAll();
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

Result<MigrationStats> Migrate(Vm& vm, const MigrateOptions& options, const ProgressFn& progress) {
  SourceMigration m(vm, options, progress);
  return m.Run();
}

}  // namespace ferry::migrate
