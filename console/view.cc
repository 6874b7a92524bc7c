#include "ferry/console/view.h"

#include <algorithm>
#include <map>

#include "ferry/ha/json_fields.h"

namespace ferry::console {

using nlohmann::json;
using ha::ArrayField;
using ha::BoolField;
using ha::Field;
using ha::NumberField;
using ha::StringField;

json MoveProgress(const std::string& to, const json& s, const std::string& standby_host) {
  json m = {{"to", to}, {"phase", "queued"}, {"bytes_left", nullptr}, {"total_bytes", nullptr},
            {"rate_bytes_per_s", nullptr}, {"dirty_pages_per_s", Field(s, "dirty_pages_per_s")},
            {"predicted_downtime_ms", nullptr}};
  const std::string rep = StringField(s, "replication");
  const double pause = NumberField(s, "pause_ms_p50"), ship = NumberField(s, "ship_ms_p50");
  if (standby_host != to || rep.empty()) {
    if (rep == "protected" || rep == "syncing") m["phase"] = "re-protecting";
    return m;
  }
  if (rep == "syncing" || rep == "connecting") {
    const json sync = Field(s, "sync");
    const double total = NumberField(sync, "round_pages") * 4096, sent = NumberField(sync, "round_sent_bytes");
    m["phase"] = "syncing";
    m["round"] = Field(sync, "round");
    if (total > 0) {
      m["total_bytes"] = total;
      m["bytes_left"] = std::max(0.0, total - sent);  // sent is compressed: an upper bound
    }
    m["rate_bytes_per_s"] = Field(sync, "rate_bytes_per_s");
    m["dirty_pages_per_s"] = Field(sync, "dirty_pages_per_s");
  } else if (rep == "protected") {
    // The handover's final checkpoint carries one interval's dirty pages, with the guest paused.
    m["phase"] = "handing-over";
    const double pages = NumberField(s, "dirty_pages_per_s") * NumberField(s, "interval_ms", 25) / 1000;
    m["bytes_left"] = pages * 4096;
    m["total_bytes"] = pages * 4096;
    m["rate_bytes_per_s"] = Field(s, "replication_bytes_per_s");
  }
  if (pause > 0 || ship > 0) m["predicted_downtime_ms"] = pause + ship;
  return m;
}

json History(const std::vector<json>& events, const std::vector<json>& drills) {
  std::vector<json> ev = events;
  std::sort(ev.begin(), ev.end(), [](const json& a, const json& b) { return NumberField(a, "t_ms") < NumberField(b, "t_ms"); });
  json out = json::array();
  std::map<std::string, double> left_ms;  // per agent: when a member last left its view
  for (const auto& e : ev) {
    const std::string kind = StringField(e, "kind"), host = StringField(e, "host");
    if (kind == "member-left") left_ms[host] = NumberField(e, "t_ms");
    if (kind == "handed-over" || kind == "handover-failed") {
      out.push_back({{"t_ms", Field(e, "t_ms")}, {"kind", "migration"}, {"vm", StringField(e, "vm")},
                     {"from", kind == "handed-over" ? StringField(e, "from") : host}, {"to", StringField(e, "to")},
                     {"downtime_ms", Field(e, "downtime_ms")}, {"client_gap_ms", nullptr},
                     {"ok", kind == "handed-over"}, {"detail", StringField(e, "detail")}});
    } else if (kind == "promoted") {
      auto l = left_ms.find(host);
      json downtime = l == left_ms.end() ? json(nullptr) : json(NumberField(e, "t_ms") - l->second);
      out.push_back({{"t_ms", Field(e, "t_ms")}, {"kind", "failover"}, {"vm", StringField(e, "vm")}, {"from", nullptr},
                     {"to", host}, {"downtime_ms", downtime}, {"client_gap_ms", nullptr}, {"ok", true},
                     {"detail", "running on " + host + " " + (downtime.is_null() ? "" : std::to_string(int(downtime.get<double>())) + " ms ") +
                                    "after its old host left this view (plus detection); " + StringField(e, "detail")}});
    }
  }
  for (const auto& d : drills) {
    const json card = Field(d, "scorecard");
    out.push_back({{"t_ms", Field(d, "t_ms")}, {"kind", "drill"}, {"vm", StringField(card, "vm")}, {"from", Field(card, "from")},
                   {"to", Field(card, "to")}, {"downtime_ms", Field(card, "rto_ms")}, {"client_gap_ms", Field(card, "rto_ms")},
                   {"ok", card.is_object()}, {"detail", StringField(d, "fault") + " " + StringField(d, "target")}});
  }
  std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) { return NumberField(a, "t_ms") < NumberField(b, "t_ms"); });
  return out;
}

json BuildView(const ha::ClusterConfig& config, const json& status, const std::vector<json>& events,
               const std::vector<json>& drills) {
  const json cluster = Field(status, "cluster");
  const bool quorate = BoolField(cluster, "quorate");
  std::map<std::string, json> host_stats;
  json hosts = json::array();
  for (const auto& hc : config.hosts) {
    json h = json::object();
    for (const auto& x : ArrayField(cluster, "hosts")) {
      if (StringField(x, "name") == hc.name) h = x;
    }
    const bool member = BoolField(h, "member");
    const json stats = Field(h, "stats");
    host_stats[hc.name] = stats;
    const json load = Field(stats, "host");
    std::string health = !member ? "down" : BoolField(h, "evacuating") ? "evacuating" : !quorate ? "no-quorum" : "ok";
    hosts.push_back({{"name", hc.name}, {"member", member}, {"health", health}, {"address", hc.address},
                     {"cpus", Field(load, "cpus")}, {"cpu_pct", Field(load, "cpu_pct")},
                     {"mem_total_bytes", Field(load, "mem_total_bytes")}, {"mem_used_bytes", Field(load, "mem_used_bytes")},
                     {"mem_pct", Field(load, "mem_pct")}, {"migration_bytes_per_s", Field(load, "migration_bytes_per_s")}});
  }
  json vms = json::array();
  for (const auto& spec : config.vms) {
    json v = json::object();
    for (const auto& x : ArrayField(cluster, "vms")) {
      if (StringField(x, "name") == spec.name) v = x;
    }
    const std::string owner = StringField(v, "owner");
    const json& hs = owner.empty() ? json() : host_stats[owner];
    const json s = Field(Field(hs, "vms"), spec.name.c_str());
    const std::string state = StringField(v, "state");
    const std::string standby = StringField(v, "standby_host");
    json protection = nullptr;
    if (!StringField(v, "replication").empty()) {
      protection = {{"state", StringField(v, "replication")}, {"standby_host", standby}, {"lag_ms", Field(s, "lag_ms")}};
    }
    const std::string moving_to = StringField(v, "moving_to");
    vms.push_back({{"name", spec.name}, {"host", state.empty() ? "" : owner}, {"state", state.empty() ? "not running" : state},
                   {"generation", ha::CountField(v, "generation")}, {"vcpus", spec.vcpus}, {"mem_bytes", spec.mem_bytes},
                   {"cpu_pct", Field(s, "cpu_pct")}, {"dirty_pages_per_s", Field(s, "dirty_pages_per_s")},
                   {"disk_bytes_per_s", Field(s, "disk_bytes_per_s")}, {"net_bytes_per_s", Field(s, "net_bytes_per_s")},
                   {"protection", protection},
                   {"move", moving_to.empty() ? json(nullptr) : MoveProgress(moving_to, s, standby)}});
  }
  json members = ArrayField(cluster, "members");
  return {{"cluster", config.name}, {"seen_from", Field(status, "host")}, {"quorate", quorate},
          {"members", members}, {"hosts", hosts}, {"vms", vms}, {"history", History(events, drills)}};
}

}  // namespace ferry::console
