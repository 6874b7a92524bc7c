#include "status_json.h"

#include <unistd.h>

#include "ferry/base/clock.h"

namespace ferry::vmhost {

using nlohmann::json;

namespace {

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

json EpochJson(const replication::EpochStats& e) {
  return {{"epoch", e.epoch}, {"pause_ms", e.pause_ms}, {"copy_ms", e.copy_ms}, {"pages", e.pages},
          {"hot_pages", e.hot_pages}, {"disk_bytes", e.disk_bytes}, {"wire_bytes", e.wire_bytes},
          {"ship_ms", e.ship_ms}, {"lag_ms", e.lag_ms}, {"interval_ms", e.interval_ms}, {"throttle", e.throttle}};
}

}  // namespace

json ReportJson(const hypervisor::GuestReport& r) {
  json fields = json::object();
  // The guest wrote these; the API server replaces invalid UTF-8 when it sends them.
  for (const auto& [k, v] : r.fields) fields[k] = v;
  return {{"seq", r.seq}, {"text", r.text}, {"fields", fields}};
}

void VmStatusJson(hypervisor::Vm& vm, json* out) {
  const auto& c = vm.config();
  json& o = *out;
  o["vm_state"] = hypervisor::RunStateName(vm.state());
  o["vcpus"] = c.vcpus;
  o["mem_bytes"] = c.mem_bytes;
  o["guest"] = c.guest_path;
  o["guest_args"] = c.guest_args;
  o["uptime_ms"] = (MonotonicNs() - vm.boot_host_ns()) / 1000000;
  o["guest_time_ns"] = vm.GuestNs();
  o["console_last_line"] = vm.LastConsoleLine();
  o["report"] = ReportJson(vm.LastReport());
  o["devices"] = DevicesJson(vm.Devices());
}

json ReplicationStatusJson(const replication::ReplicationStatus& s) {
  json recent = json::array();
  for (const auto& e : s.recent) recent.push_back(EpochJson(e));
  return {{"role", "primary"}, {"state", replication::ReplicationStateName(s.state)}, {"standby", s.standby}, {"error", s.error},
          {"generation", s.generation}, {"epochs", s.epochs}, {"sync_ms", s.sync_ms},
          {"sync_disk_bytes", s.sync_disk_bytes}, {"wire_bytes", s.wire_bytes}, {"interval_ms", s.interval_ms},
          {"throttle", s.throttle}, {"lagging_epochs", s.lagging_epochs}, {"behind_ms", s.behind_ms},
          {"pause_ms_p50", s.pause_ms_p50}, {"pause_ms_p99", s.pause_ms_p99}, {"pause_ms_max", s.pause_ms_max},
          {"lag_ms_p50", s.lag_ms_p50}, {"lag_ms_max", s.lag_ms_max}, {"ship_ms_p50", s.ship_ms_p50},
          {"output_held", s.output_held}, {"recent", recent},
          {"sync", {{"round", s.sync_round}, {"round_pages", s.sync_round_pages}, {"round_sent_bytes", s.sync_round_sent_bytes},
                    {"rate_bytes_per_s", s.sync_rate_bytes_per_s}, {"dirty_pages_per_s", s.sync_dirty_pages_per_s}}}};
}

json StandbyStatusJson(const replication::StandbyStatus& s) {
  return {{"role", "standby"}, {"state", replication::StandbyStateName(s.state)}, {"primary", s.primary}, {"error", s.error},
          {"generation", s.generation}, {"handed_over", s.handed_over}, {"committed_epoch", s.committed_epoch},
          {"discarded", s.discarded}, {"since_commit_ms", s.since_commit_ms}, {"apply_ms_p50", s.apply_ms_p50},
          {"wire_bytes", s.wire_bytes}, {"disk_bytes", s.disk_bytes}, {"refused_peers", s.refused_peers}};
}

}  // namespace ferry::vmhost
