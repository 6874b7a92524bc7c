#include "ferry/ha/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "ferry/base/units.h"

namespace ferry::ha {

using nlohmann::json;

namespace {

template <typename T>
Status Read(const json& j, const char* key, T* out, bool required, const std::string& where) {
  if (!j.contains(key)) {
    return required ? InvalidArgument(where + ": \"" + key + "\" is missing") : Status::Ok();
  }
  try {
    *out = j.at(key).get<T>();
  } catch (const json::exception& e) {
    return InvalidArgument(where + ": \"" + key + "\" has the wrong type");
  }
  return Status::Ok();
}

Status ParsePolicy(const json& j, const std::set<std::string>& vms, PlacementPolicy* p) {
  if (!j.is_object()) return InvalidArgument("config: \"policy\" must be an object");
  FERRY_RETURN_IF_ERROR(Read(j, "max_cpu_pct", &p->max_cpu_pct, false, "policy"));
  FERRY_RETURN_IF_ERROR(Read(j, "max_mem_pct", &p->max_mem_pct, false, "policy"));
  FERRY_RETURN_IF_ERROR(Read(j, "anti_affinity", &p->anti_affinity, false, "policy"));
  FERRY_RETURN_IF_ERROR(Read(j, "interval_s", &p->interval_s, false, "policy"));
  FERRY_RETURN_IF_ERROR(Read(j, "settle_s", &p->settle_s, false, "policy"));
  if (p->max_cpu_pct < 0 || p->max_mem_pct < 0) return InvalidArgument("policy: thresholds must not be negative");
  if (p->interval_s < 0 || p->settle_s < 0) return InvalidArgument("policy: interval_s and settle_s must not be negative");
  for (const auto& group : p->anti_affinity) {
    if (group.size() < 2) return InvalidArgument("policy: an anti_affinity group names at least two VMs");
    for (const auto& v : group) {
      if (!vms.count(v)) return InvalidArgument("policy: anti_affinity names vm " + v + ", which is not in vms");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<ClusterConfig> ClusterConfig::Parse(const json& j) {
  if (!j.is_object()) return InvalidArgument("the HA config must be a JSON object");
  ClusterConfig c;
  FERRY_RETURN_IF_ERROR(Read(j, "name", &c.name, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "key_file", &c.key_file, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "interval_ms", &c.interval_ms, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "io_timeout_ms", &c.io_timeout_ms, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "promote_delay_ms", &c.promote_delay_ms, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "lease_ms", &c.lease_ms, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "hung_vmm_ms", &c.hung_vmm_ms, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "vm_log_max_mb", &c.vm_log_max_mb, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "tls_cert", &c.tls_cert, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "tls_key", &c.tls_key, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "tls_ca", &c.tls_ca, false, "config"));
  FERRY_RETURN_IF_ERROR(Read(j, "insecure", &c.insecure, false, "config"));
  const bool some_tls = !c.tls_cert.empty() || !c.tls_key.empty() || !c.tls_ca.empty();
  if (some_tls && (c.tls_cert.empty() || c.tls_key.empty() || c.tls_ca.empty())) {
    return InvalidArgument("config: \"tls_cert\", \"tls_key\" and \"tls_ca\" go together");
  }
  if (some_tls + !c.key_file.empty() + c.insecure > 1) {
    return InvalidArgument("config: choose one of \"key_file\", certificates (\"tls_cert\"...) and \"insecure\"");
  }
  if (c.lease_ms != 0 && (c.lease_ms < 300 || c.lease_ms > 600000)) {
    return InvalidArgument("config: \"lease_ms\" must be 0 (no lease) or 300..600000");
  }
  if (c.hung_vmm_ms != 0 && (c.hung_vmm_ms < 3000 || c.hung_vmm_ms > 3600000)) {
    return InvalidArgument("config: \"hung_vmm_ms\" must be 0 (never) or 3000..3600000");
  }
  if (c.vm_log_max_mb < 2 || c.vm_log_max_mb > 1048576) {
    return InvalidArgument("config: \"vm_log_max_mb\" must be 2..1048576");
  }
  FERRY_RETURN_IF_ERROR(Read(j, "client_netns", &c.client_netns, false, "config"));
  if (!j.contains("hosts") || !j["hosts"].is_array() || j["hosts"].empty()) {
    return InvalidArgument("config: \"hosts\" must be a non-empty array");
  }
  std::set<std::string> names;
  std::set<uint32_t> ids;
  for (const auto& h : j["hosts"]) {
    HostConfig hc;
    std::string where = "host " + std::to_string(c.hosts.size());
    FERRY_RETURN_IF_ERROR(Read(h, "name", &hc.name, true, where));
    where = "host " + hc.name;
    FERRY_RETURN_IF_ERROR(Read(h, "nodeid", &hc.nodeid, true, where));
    FERRY_RETURN_IF_ERROR(Read(h, "address", &hc.address, true, where));
    FERRY_RETURN_IF_ERROR(Read(h, "dir", &hc.dir, true, where));
    FERRY_RETURN_IF_ERROR(Read(h, "guest_bridge", &hc.guest_bridge, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "netns", &hc.netns, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "uplink", &hc.uplink, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "cpus", &hc.cpus, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "mem_bytes", &hc.mem_bytes, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "metrics", &hc.metrics, false, where));
    FERRY_RETURN_IF_ERROR(Read(h, "corosync_start", &hc.corosync_start, false, where));
    if (h.contains("corosync_start") && (hc.corosync_start.empty() || hc.corosync_start[0].empty())) {
      return InvalidArgument(where + ": corosync_start must be a command (an array of strings) or absent");
    }
    if (hc.cpus < 0) return InvalidArgument(where + ": cpus must not be negative");
    if (!hc.metrics.empty() && hc.metrics.rfind(':') == std::string::npos) {
      return InvalidArgument(where + ": metrics must be ADDR:PORT");
    }
    if (hc.nodeid == 0) return InvalidArgument(where + ": nodeid must be positive");
    if (!names.insert(hc.name).second) return InvalidArgument("config: host " + hc.name + " is named twice");
    if (!ids.insert(hc.nodeid).second) return InvalidArgument(where + ": nodeid " + std::to_string(hc.nodeid) + " is used twice");
    c.hosts.push_back(hc);
  }
  if (j.contains("vms") && !j["vms"].is_array()) return InvalidArgument("config: \"vms\" must be an array");
  std::set<std::string> vm_names;
  std::set<uint16_t> ports;
  for (const auto& v : j.value("vms", json::array())) {
    VmSpec s;
    std::string where = "vm " + std::to_string(c.vms.size());
    FERRY_RETURN_IF_ERROR(Read(v, "name", &s.name, true, where));
    where = "vm " + s.name;
    FERRY_RETURN_IF_ERROR(Read(v, "guest", &s.guest, true, where));
    FERRY_RETURN_IF_ERROR(Read(v, "mem", &s.mem, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "vcpus", &s.vcpus, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "disk_bytes", &s.disk_bytes, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "net", &s.net, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "guest_args", &s.guest_args, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "primary", &s.primary, true, where));
    FERRY_RETURN_IF_ERROR(Read(v, "backup", &s.backup, false, where));
    FERRY_RETURN_IF_ERROR(Read(v, "port", &s.port, true, where));
    FERRY_RETURN_IF_ERROR(Read(v, "service", &s.service, false, where));
    auto mem = ParseSize(s.mem);
    if (!mem.ok() || *mem == 0) return InvalidArgument(where + ": mem \"" + s.mem + "\" is not a size (e.g. 64M)");
    s.mem_bytes = *mem;
    std::string sync_bw;
    FERRY_RETURN_IF_ERROR(Read(v, "sync_bandwidth", &sync_bw, false, where));
    if (!sync_bw.empty()) {
      auto bw = ParseSize(sync_bw);
      if (!bw.ok()) return InvalidArgument(where + ": sync_bandwidth \"" + sync_bw + "\" is not a rate (bytes/s, e.g. 100M)");
      s.sync_bandwidth = *bw;
    }
    if (s.name.empty() || s.name.find_first_of("/ .") != std::string::npos) {
      return InvalidArgument(where + ": the name must be a plain word (it names files)");
    }
    if (!vm_names.insert(s.name).second) return InvalidArgument("config: vm " + s.name + " is named twice");
    if (!names.count(s.primary)) return InvalidArgument(where + ": primary host " + s.primary + " is not in hosts");
    if (!s.backup.empty() && !names.count(s.backup)) return InvalidArgument(where + ": backup host " + s.backup + " is not in hosts");
    if (s.backup == s.primary) return InvalidArgument(where + ": primary and backup must differ");
    if (s.port == 0 || !ports.insert(s.port).second) return InvalidArgument(where + ": port must be set and unique");
    if (s.net) {
      for (const auto& h : c.hosts) {
        if (h.guest_bridge.empty()) return InvalidArgument(where + " has a NIC but host " + h.name + " names no guest_bridge");
      }
    }
    c.vms.push_back(s);
  }
  if (j.contains("policy")) FERRY_RETURN_IF_ERROR(ParsePolicy(j["policy"], vm_names, &c.policy));
  return c;
}

Result<ClusterConfig> ClusterConfig::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("cannot read the HA config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return InvalidArgument(path + " is not valid JSON");
  auto c = Parse(j);
  if (!c.ok()) return c.status().Annotate(path);
  return c;
}

const HostConfig* ClusterConfig::Host(const std::string& name) const {
  for (const auto& h : hosts) {
    if (h.name == name) return &h;
  }
  return nullptr;
}

const HostConfig* ClusterConfig::HostByNode(uint32_t nodeid) const {
  for (const auto& h : hosts) {
    if (h.nodeid == nodeid) return &h;
  }
  return nullptr;
}

const VmSpec* ClusterConfig::Vm(const std::string& name) const {
  for (const auto& v : vms) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

std::string ClusterConfig::TlsPath(const std::string& path, const std::string& host) const {
  std::string out = path;
  for (size_t at; (at = out.find("{host}")) != std::string::npos;) out.replace(at, 6, host);
  return out;
}

}  // namespace ferry::ha
