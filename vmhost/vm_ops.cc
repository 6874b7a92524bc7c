// The VM host's operator requests on a running VM: pause, resume, stop, snapshot, verify,
// dirty-rate, throttle. Each is admitted by the lifecycle first (lifecycle.cc's table).
#include <sys/stat.h>

#include "ferry/base/clock.h"
#include "ferry/dirtylog/dirty_rate.h"
#include "ferry/hypervisor/snapshot.h"
#include "ferry/vmhost/vm_host.h"
#include "status_json.h"

namespace ferry::vmhost {

using nlohmann::json;

json VmHost::Pause() {
  std::lock_guard control(control_mu_);
  auto from = lifecycle_.Begin(Event::kPause);
  if (!from.ok()) return ErrorReply(from.status());
  auto r = vm()->Pause();
  if (!r.ok()) {
    lifecycle_.Revert(*from, Phase::kPaused);
    return ErrorReply(r.status());
  }
  return {{"ok", true}, {"latency_us", r->latency_ns / 1e3}};
}

json VmHost::Resume(bool force) {
  std::lock_guard control(control_mu_);
  uint64_t t0 = MonotonicNs();
  auto from = lifecycle_.Begin(force ? Event::kForceResume : Event::kResume);
  if (!from.ok()) return ErrorReply(from.status());
  // Only a forced resume after an unanswered commit lifts that seal; a fence's stays.
  if (*from == Phase::kCommitUnknown) {
    vm()->Unseal();
    // A post-copy destination left unresolved holds its disk writes and output: this copy
    // is the one now, so they go (no-ops elsewhere).
    if (ferry::Status c = vm()->CommitDiskOverlay(); !c.ok()) {
      (void)vm()->Seal("a commit to the other host went unanswered");
      lifecycle_.Revert(*from, Phase::kRunning);
      return ErrorReply(c.Annotate("write the held disk writes"));
    }
    vm()->StopOutputBuffering();
  }
  if (ferry::Status st = vm()->Resume(); !st.ok()) {
    if (*from == Phase::kCommitUnknown) (void)vm()->Seal("a commit to the other host went unanswered");
    lifecycle_.Revert(*from, Phase::kRunning);
    return ErrorReply(st);
  }
  return {{"ok", true}, {"latency_us", (MonotonicNs() - t0) / 1e3}};
}

json VmHost::Stop(bool force) {
  std::function<void()> cancel;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kStop);
    if (!from.ok()) return ErrorReply(from.status());
    if (hypervisor::Vm* v = vm()) {
      // commit-unknown: the guest is paused and sealed and will not run to hear a request.
      if (force || *from == Phase::kCommitUnknown) {
        v->Stop();
      } else {
        v->RequestGuestStop();
      }
      return {{"ok", true}};
    }
    std::lock_guard lock(mu_);
    cancel = cancel_;
    shutdown_ = true;
    cv_.notify_all();
  }
  if (cancel) cancel();  // incoming or standby: nothing runs here yet
  return {{"ok", true}};
}

namespace {

// A snapshot must not replace a file the VM lives on: its API socket, disk image or guest.
ferry::Status CheckSnapshotTarget(const std::string& file, const std::vector<std::pair<const char*, std::string>>& own) {
  struct stat target{};
  if (::stat(file.c_str(), &target) != 0) return ferry::Status::Ok();  // a new file
  if (!S_ISREG(target.st_mode)) return InvalidArgument("snapshot: " + file + " exists and is not a regular file");
  for (const auto& [what, path] : own) {
    struct stat st{};
    if (path.empty() || ::stat(path.c_str(), &st) != 0) continue;
    if (st.st_dev == target.st_dev && st.st_ino == target.st_ino) {
      return InvalidArgument("snapshot: " + file + " is this VM's " + what + " (" + path + "); choose another file");
    }
  }
  return ferry::Status::Ok();
}

}  // namespace

json VmHost::Snapshot(const SnapshotRequest& r) {
  hypervisor::Vm& v = *vm();
  if (ferry::Status st = CheckSnapshotTarget(r.file, {{"API socket", api_path_},
                                                      {"disk image", v.config().devices.disk_path},
                                                      {"guest image", v.config().guest_path}});
      !st.ok()) {
    return ErrorReply(st);
  }
  Phase before;
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kSnapshot);
    if (!from.ok()) return ErrorReply(from.status());
    before = *from;
  }
  hypervisor::SnapshotOptions options;
  options.fsync = r.fsync;
  uint64_t t0 = MonotonicNs();
  auto pause = v.Pause();
  Result<hypervisor::SnapshotStats> stats = pause.status();
  if (pause.ok()) {
    auto state = v.SaveState();
    stats = state.ok() ? hypervisor::WriteSnapshot(r.file, *state, v.memory(), options)
                       : Result<hypervisor::SnapshotStats>(state.status());
  }
  bool stopped = false;
  {
    std::lock_guard control(control_mu_);
    if (stats.ok() && r.stop) {
      v.Stop();
      stopped = true;
      (void)lifecycle_.End(Event::kDoneStopped);
    } else {
      // Failed or not, the VM goes on as it was (unless a fence came meanwhile: sealed).
      if (before == Phase::kRunning) (void)v.Resume();
      EndHeld(Event::kDone);
    }
  }
  uint64_t paused_ns = MonotonicNs() - t0;
  if (!stats.ok()) return ErrorReply(stats.status().Annotate("snapshot"));
  double secs = stats->elapsed_ns / 1e9;
  return {{"ok", true},
          {"file", r.file},
          {"file_bytes", stats->file_bytes},
          {"ram_bytes", stats->ram_bytes},
          {"data_chunks", stats->data_chunks},
          {"zero_chunks", stats->zero_chunks},
          {"write_ms", stats->elapsed_ns / 1e6},
          {"pause_latency_us", pause->latency_ns / 1e3},
          {"downtime_ms", paused_ns / 1e6},
          {"gib_per_s", secs > 0 ? stats->ram_bytes / secs / (1u << 30) : 0.0},
          {"stopped", stopped}};
}

// Raises a verify event and waits for the guest's report for it. No phase of its own: the
// guest verifies while it runs; a migration or stop meanwhile ends the wait with an error.
json VmHost::Verify(const VerifyRequest& r) {
  hypervisor::Vm& v = *vm();
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kVerify);
    if (!from.ok()) return ErrorReply(from.status());
  }
  // A guest that has reported without verify fields is not memcheck; one that has not reported
  // yet (just promoted, restored or arrived) is waited for.
  if (const auto report = v.LastReport(); report.seq != 0 && !report.fields.count("verify_seq")) {
    return ErrorReply(Unsupported("the guest does not report verification (is it memcheck?)"));
  }
  auto result = hypervisor::AwaitVerification(v, v.RequestVerify(), r.timeout_ms);
  if (!result.ok()) return ErrorReply(result.status());
  return {{"ok", true}, {"passed", result->passed}, {"report", ReportJson(result->report)}};
}

json VmHost::DirtyRate(const DirtyRateRequest& r) {
  hypervisor::Vm& v = *vm();
  {
    std::lock_guard control(control_mu_);
    auto from = lifecycle_.Begin(Event::kDirtyRate);
    if (!from.ok()) return ErrorReply(from.status());
  }
  auto rate = dirtylog::MeasureDirtyRate(v, r.seconds, r.interval_ms / 1000.0);
  {
    std::lock_guard control(control_mu_);
    EndHeld(Event::kDone);
  }
  if (!rate.ok()) return ErrorReply(rate.status());
  json throttle = json::array();
  for (uint32_t i = 0; i < v.config().vcpus; ++i) throttle.push_back(v.throttle(i));
  return {{"ok", true},
          {"source", rate->source},
          {"seconds", rate->seconds},
          {"interval_ms", r.interval_ms},
          {"harvests", rate->harvests},
          {"pages", rate->pages},
          {"pages_per_s", rate->pages_per_s},
          {"mb_per_s", rate->mb_per_s},
          {"per_vcpu_pages_per_s", rate->per_vcpu_pages_per_s},
          {"harvest_ms_median", rate->harvest_ms_median},
          {"throttle_percent", throttle}};
}

json VmHost::Throttle(const ThrottleRequest& r) {
  hypervisor::Vm& v = *vm();
  std::lock_guard control(control_mu_);
  auto from = lifecycle_.Begin(Event::kThrottle);
  if (!from.ok()) return ErrorReply(from.status());
  if (auto st = v.SetThrottle(r.vcpu, r.percent); !st.ok()) return ErrorReply(st);
  json all = json::array();
  for (uint32_t i = 0; i < v.config().vcpus; ++i) all.push_back(v.throttle(i));
  return {{"ok", true}, {"throttle_percent", all}};
}

}  // namespace ferry::vmhost
