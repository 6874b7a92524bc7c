// The JSON API's operations on a running VM: status, pause, resume, snapshot, verify, stop.
#include <chrono>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/dirtylog/dirty_rate.h"
#include "ferry/hypervisor/snapshot.h"
#include "vmm_host.h"

namespace ferry::cli {

using nlohmann::json;
using hypervisor::RunState;

namespace {

json Error(const std::string& message) { return {{"ok", false}, {"error", message}}; }
json Error(const ferry::Status& st) { return Error(st.message()); }

json ReportJson(const hypervisor::GuestReport& r) {
  json fields = json::object();
  for (const auto& [k, v] : r.fields) fields[k] = v;
  return {{"seq", r.seq}, {"text", r.text}, {"fields", fields}};
}

json DevicesJson(const hypervisor::DeviceReport& d) {
  json out = json::object();
  if (d.has_disk) {
    const auto& b = d.block;
    out["disk"] = {{"path", d.disk_path}, {"sectors", d.disk_sectors}, {"reads", b.reads}, {"writes", b.writes},
                   {"flushes", b.flushes}, {"bytes_read", b.bytes_read}, {"bytes_written", b.bytes_written},
                   {"bad_requests", b.bad_requests}, {"io_errors", b.io_errors}};
  }
  if (d.has_nic) {
    const auto& n = d.net;
    out["nic"] = {{"tap", d.tap}, {"mac", hypervisor::FormatMac(d.mac)},
                  {"guest_ip", d.guest_ip ? json(hypervisor::FormatIpv4(d.guest_ip)) : json(nullptr)},
                  {"rx_frames", n.rx_frames}, {"rx_bytes", n.rx_bytes}, {"rx_bad_buffers", n.rx_bad_buffers},
                  {"tx_frames", n.tx_frames}, {"tx_bytes", n.tx_bytes}, {"tx_dropped", n.tx_dropped},
                  {"tx_bad", n.tx_bad}, {"tx_spoofed", n.tx_spoofed}, {"announcements", n.announcements},
                  {"tx_buffered", n.tx_buffered}, {"tx_held", n.tx_held}};
  }
  return out;
}

json StatusJson(hypervisor::Vm& vm) {
  const auto& c = vm.config();
  return {{"ok", true},
          {"state", hypervisor::RunStateName(vm.state())},
          {"vcpus", c.vcpus},
          {"mem_bytes", c.mem_bytes},
          {"guest", c.guest_path},
          {"guest_args", c.guest_args},
          {"pid", getpid()},
          {"uptime_ms", (MonotonicNs() - vm.boot_host_ns()) / 1000000},
          {"guest_time_ns", vm.GuestNs()},
          {"console_last_line", vm.LastConsoleLine()},
          {"report", ReportJson(vm.LastReport())},
          {"devices", DevicesJson(vm.Devices())},
          {"replication", ReplicationJson()},
          {"ha", HaJson()}};
}

json Snapshot(hypervisor::Vm& vm, const json& req) {
  if (!req.contains("file") || !req["file"].is_string()) return Error("snapshot needs a \"file\"");
  std::string file = req["file"];
  bool stop_after = req.value("stop", false);
  hypervisor::SnapshotOptions options;
  options.fsync = req.value("fsync", true);
  bool was_paused = vm.state() == RunState::kPaused;
  uint64_t t0 = MonotonicNs();
  auto pause = vm.Pause();
  if (!pause.ok()) return Error(pause.status());
  auto state = vm.SaveState();
  Result<hypervisor::SnapshotStats> stats = state.ok()
      ? hypervisor::WriteSnapshot(file, *state, vm.memory(), options)
      : Result<hypervisor::SnapshotStats>(state.status());
  if (stats.ok() && stop_after) {
    vm.Stop();
  } else if (!was_paused) {
    // Failed or not: the VM keeps running where it was.
    (void)vm.Resume();
  }
  uint64_t paused_ns = MonotonicNs() - t0;
  if (!stats.ok()) return Error(stats.status());
  double secs = stats->elapsed_ns / 1e9;
  return {{"ok", true},
          {"file", file},
          {"file_bytes", stats->file_bytes},
          {"ram_bytes", stats->ram_bytes},
          {"data_chunks", stats->data_chunks},
          {"zero_chunks", stats->zero_chunks},
          {"write_ms", stats->elapsed_ns / 1e6},
          {"pause_latency_us", pause->latency_ns / 1e3},
          {"downtime_ms", paused_ns / 1e6},
          {"gib_per_s", secs > 0 ? stats->ram_bytes / secs / (1u << 30) : 0.0},
          {"stopped", stop_after}};
}

// Raises a verify event and waits for the guest's report for it.
json Verify(hypervisor::Vm& vm, const json& req) {
  int timeout_ms = req.value("timeout_ms", 30000);
  if (vm.state() != RunState::kRunning) return Error("verify needs a running VM");
  if (!vm.LastReport().fields.count("verify_seq")) {
    return Error("the guest does not report verification (is it memcheck?)");
  }
  auto v = hypervisor::AwaitVerification(vm, vm.RequestVerify(), static_cast<uint64_t>(timeout_ms));
  if (!v.ok()) return Error(v.status());
  return {{"ok", true}, {"passed", v->passed}, {"report", ReportJson(v->report)}};
}

json DirtyRate(hypervisor::Vm& vm, const json& req) {
  double seconds = req.value("seconds", 1.0), interval = req.value("interval_ms", 100.0) / 1000.0;
  if (vm.state() != RunState::kRunning) return Error("dirty-rate needs a running VM");
  auto r = dirtylog::MeasureDirtyRate(vm, seconds, interval);
  if (!r.ok()) return Error(r.status());
  json throttle = json::array();
  for (uint32_t i = 0; i < vm.config().vcpus; ++i) throttle.push_back(vm.throttle(i));
  return {{"ok", true},
          {"source", r->source},
          {"seconds", r->seconds},
          {"interval_ms", interval * 1000},
          {"harvests", r->harvests},
          {"pages", r->pages},
          {"pages_per_s", r->pages_per_s},
          {"mb_per_s", r->mb_per_s},
          {"per_vcpu_pages_per_s", r->per_vcpu_pages_per_s},
          {"harvest_ms_median", r->harvest_ms_median},
          {"throttle_percent", throttle}};
}

json Throttle(hypervisor::Vm& vm, const json& req) {
  int percent = req.value("percent", -1), vcpu = req.value("vcpu", -1);
  if (percent < 0 || percent > 99) return Error("throttle needs \"percent\" in 0..99");
  if (auto st = vm.SetThrottle(vcpu, static_cast<uint32_t>(percent)); !st.ok()) return Error(st);
  json all = json::array();
  for (uint32_t i = 0; i < vm.config().vcpus; ++i) all.push_back(vm.throttle(i));
  return {{"ok", true}, {"throttle_percent", all}};
}

}  // namespace

json HandleApiRequest(hypervisor::Vm& vm, const json& req, const ApiEmit& emit) {
  std::string op = req.value("op", "");
  if (op == "status") return StatusJson(vm);
  if (op == "pause") {
    auto r = vm.Pause();
    if (!r.ok()) return Error(r.status());
    return {{"ok", true}, {"latency_us", r->latency_ns / 1e3}};
  }
  if (op == "resume") {
    uint64_t t0 = MonotonicNs();
    if (auto st = vm.Resume(); !st.ok()) return Error(st);
    return {{"ok", true}, {"latency_us", (MonotonicNs() - t0) / 1e3}};
  }
  if (op == "snapshot") return Snapshot(vm, req);
  if (op == "migrate") return HandleMigrate(vm, req, emit);
  if (op == "replicate") return HandleReplicate(vm, req);
  if (op == "replicate_stop") return HandleReplicateStop();
  if (op == "handover") return HandleHandover(vm, req);
  if (op == "fence" || op == "unfence" || op == "release_output" || op == "set_generation") {
    return HandleHaRequest(vm, op, req);
  }
  if (op == "verify") return Verify(vm, req);
  if (op == "dirty_rate") return DirtyRate(vm, req);
  if (op == "throttle") return Throttle(vm, req);
  if (op == "stop") {
    if (req.value("force", false)) {
      vm.Stop();
    } else {
      vm.RequestGuestStop();
    }
    return {{"ok", true}};
  }
  return Error("unknown op \"" + op + "\" (expected status, pause, resume, snapshot, migrate, replicate, replicate_stop, handover, verify, dirty_rate, throttle, fence, unfence, release_output, set_generation or stop)");
}

}  // namespace ferry::cli
