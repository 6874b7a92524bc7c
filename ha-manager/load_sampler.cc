#include "ferry/ha/load_sampler.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "ferry/ha/json_fields.h"

namespace ferry::ha {

using nlohmann::json;

namespace {

// utime + stime of a process, in clock ticks (0 if it is gone).
uint64_t CpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int k = 3; fields >> f; ++k) {  // field 3 is the state
    if (k == 14) utime = std::stoull(f);
    if (k == 15) {
      stime = std::stoull(f);
      break;
    }
  }
  return utime + stime;
}

uint64_t MemTotal() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:") return kib * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

}  // namespace

LoadSampler::LoadSampler(const HostConfig& host) {
  cpus_ = host.cpus > 0 ? host.cpus : static_cast<double>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  mem_total_ = host.mem_bytes > 0 ? host.mem_bytes : MemTotal();
  ticks_per_s_ = std::max(1L, ::sysconf(_SC_CLK_TCK));
}

void LoadSampler::Observe(const std::string& name, pid_t pid, const json& status, uint64_t now_ms) {
  Vm& vm = vms_[name];
  vm.seen = true;
  vm.primary = status.value("state", "") != "standby";
  vm.mem_bytes = CountField(status, "mem_bytes");
  const json dev = Field(status, "devices"), disk = Field(dev, "disk"), nic = Field(dev, "nic");
  const json rep = Field(status, "replication");
  Sample s{now_ms, CpuTicks(pid), CountField(disk, "bytes_read") + CountField(disk, "bytes_written"),
           CountField(nic, "rx_bytes") + CountField(nic, "tx_bytes"), CountField(rep, "wire_bytes")};
  const double dt = (now_ms - vm.last.t_ms) / 1000.0;
  if (vm.last.t_ms == 0 || s.cpu_ticks < vm.last.cpu_ticks) {
    vm.last = s;  // first sight, or a new process under the same name
  } else if (dt >= 0.5) {
    auto rate = [&](uint64_t now, uint64_t then) { return now >= then ? (now - then) / dt : now / dt; };
    vm.cpu_pct = 100.0 * (s.cpu_ticks - vm.last.cpu_ticks) / ticks_per_s_ / dt;
    vm.disk_bps = rate(s.disk_bytes, vm.last.disk_bytes);
    vm.net_bps = rate(s.net_bytes, vm.last.net_bytes);
    vm.wire_bps = rate(s.wire_bytes, vm.last.wire_bytes);  // a new replication restarts at 0
    vm.last = s;
  }
  // Dirty rate: the pages of the recent checkpoints over the time they covered. Their pauses
  // and lags go on for the metrics' per-checkpoint histograms.
  double pages = 0, ms = 0;
  json recent = json::array();
  if (rep.is_object() && rep.contains("recent")) {
    for (const auto& e : rep["recent"]) {
      pages += NumberField(e, "pages");
      ms += NumberField(e, "interval_ms");
      recent.push_back({{"epoch", CountField(e, "epoch")}, {"pause_ms", NumberField(e, "pause_ms")}, {"lag_ms", NumberField(e, "lag_ms")}});
    }
  }
  json sync = nullptr;
  std::string rstate = rep.is_object() ? rep.value("state", "") : "";
  if (rstate == "syncing" && rep.contains("sync")) sync = rep["sync"];
  vm.figures = {{"vcpus", status.value("vcpus", 0)},
                {"state", status.value("state", "")},
                {"dirty_pages_per_s", ms > 0 ? pages * 1000 / ms : NumberField(sync, "dirty_pages_per_s")},
                {"lag_ms", NumberField(rep, "behind_ms")},
                {"pause_ms_p50", NumberField(rep, "pause_ms_p50")},
                {"ship_ms_p50", NumberField(rep, "ship_ms_p50")},
                {"interval_ms", NumberField(rep, "interval_ms")},
                {"replication", rstate},
                {"wire_bytes", s.wire_bytes},
                {"epochs", CountField(rep, "epochs")},
                {"sync", sync},
                {"recent", recent}};
}

void LoadSampler::EndRound() {
  for (auto it = vms_.begin(); it != vms_.end();) {
    if (!it->second.seen) {
      it = vms_.erase(it);
    } else {
      it->second.seen = false;
      ++it;
    }
  }
}

json LoadSampler::Stats() const {
  double cpu = 0, wire = 0;
  uint64_t mem = 0;
  json vms = json::object();
  for (const auto& [name, vm] : vms_) {
    cpu += vm.cpu_pct;
    mem += vm.mem_bytes;  // a standby holds the whole of its VM's memory too
    if (!vm.primary) continue;
    wire += vm.wire_bps;
    json v = vm.figures;
    v["cpu_pct"] = vm.cpu_pct;
    v["mem_bytes"] = vm.mem_bytes;
    v["disk_bytes_per_s"] = vm.disk_bps;
    v["net_bytes_per_s"] = vm.net_bps;
    v["replication_bytes_per_s"] = vm.wire_bps;
    vms[name] = v;
  }
  return {{"host", {{"cpus", cpus_}, {"cpu_pct", cpu / cpus_}, {"mem_total_bytes", mem_total_},
                    {"mem_used_bytes", mem}, {"mem_pct", mem_total_ ? 100.0 * mem / mem_total_ : 0.0},
                    {"migration_bytes_per_s", wire}}},
          {"vms", vms}};
}

}  // namespace ferry::ha
