// ferry standby / ferry replicate / ferry promote: continuous replication to a hot standby.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "device_flags.h"
#include "security_flags.h"
#include "ferry/vmhost/requests.h"
#include "ferry/migrate/transport.h"
#include "ferry/replication/standby.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct StandbyFlags {
  std::string listen, api;
  SecurityFlags security;
  DeviceFlags devices;
  uint64_t io_timeout_ms = 3000;
  double accept_timeout_s = 0;
  uint64_t min_generation = 0;
  uint64_t lease_ms = 0;
};

struct ReplicateFlags {
  std::string api, to;
  SecurityFlags security;
  double interval_ms = 25;
  double max_interval_ms = 0;  // 0: the VMM's default, min(1000, io_timeout_ms / 2)
  uint32_t streams = 2;
  std::string compress = "zstd";
  uint64_t io_timeout_ms = 3000;
  double wait_s = 300;
  bool no_throttle = false;
  bool stop = false;
  bool json_out = false;
};

struct PromoteFlags {
  std::string api;
  bool force = false;
  uint64_t generation = 0;
  bool json_out = false;
};

int DoStandby(const StandbyFlags& f) {
  replication::StandbyOptions o;
  o.listen = f.listen;
  o.io_timeout_ms = f.io_timeout_ms;
  o.min_generation = f.min_generation;
  o.accept_timeout_ms = static_cast<uint64_t>(f.accept_timeout_s * 1000);
  o.console = StdoutConsole();
  auto overrides = f.devices.Overrides();
  if (!overrides.ok()) return Fail(overrides.status().message(), kExitUsage);
  o.devices = *overrides;
  auto security = f.security.Load();
  if (!security.ok()) return Fail(security.status());
  o.security = std::move(security).value();
  auto standby = replication::Standby::Listen(o);
  if (!standby.ok()) return Fail(standby.status().message());
  std::fprintf(stderr, "ferry standby: listening on %s%s\n", (*standby)->address().c_str(),
               (" (" + o.security.Describe() + ")").c_str());
  return ExitCodeFor(vmhost::RunStandby(std::move(standby).value(), f.api, f.lease_ms));
}

void PrintReplication(json r) {  // by value: see Call in cmd_control.cc
  std::printf("replicating to %s: protected at checkpoint %llu after a %.0f ms initial sync; epochs of %.0f ms, "
              "pause p50 %.2f ms, lag p50 %.1f ms\n",
              r.value("standby", "").c_str(), static_cast<unsigned long long>(r.value("epochs", uint64_t{0})),
              r.value("sync_ms", 0.0), r.value("interval_ms", 0.0), r.value("pause_ms_p50", 0.0),
              r.value("lag_ms_p50", 0.0));
}

int DoReplicate(const ReplicateFlags& f) {
  json req;
  if (f.stop) {
    req = {{"op", "replicate_stop"}};
  } else {
    if (f.to.empty()) return Fail("--to HOST:PORT is required (or --stop)", kExitUsage);
    if (auto ep = migrate::ParseEndpoint(f.to); !ep.ok()) return Fail("--to: " + ep.status().message(), kExitUsage);
    if (f.compress != "zstd" && f.compress != "none") return Fail("--compress must be zstd or none", kExitUsage);
    if (f.interval_ms < 1 || f.interval_ms > 60000) return Fail("--interval-ms must be 1..60000", kExitUsage);
    if (f.max_interval_ms < 0 || f.max_interval_ms > 600000) return Fail("--max-interval-ms must be 0..600000", kExitUsage);
    if (f.wait_s < 0 || f.wait_s > 3600) return Fail("--wait-s must be 0..3600", kExitUsage);
    req = {{"op", "replicate"}, {"to", f.to}, {"interval_ms", static_cast<uint64_t>(f.interval_ms)},
           {"max_interval_ms", f.max_interval_ms ? static_cast<uint64_t>(std::max(f.max_interval_ms, f.interval_ms)) : uint64_t{0}}, {"streams", f.streams},
           {"compress", f.compress}, {"io_timeout_ms", f.io_timeout_ms}, {"throttle", !f.no_throttle},
           {"wait_ms", static_cast<uint64_t>(f.wait_s * 1000)}};
    auto security = f.security.Load();
    if (!security.ok()) return Fail(security.status());
    vmhost::SecurityToRequest(*security, &req);  // the API socket is owner-only
  }
  auto r = CallApi(f.api, req, static_cast<int>(f.wait_s * 1000) + 30000);
  if (!r.ok()) {
    if (f.json_out) std::printf("%s\n", json{{"ok", false}, {"error", r.status().message()}}.dump().c_str());
    return Fail(r.status());
  }
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
  } else if (f.stop) {
    std::printf("replication stopped after %llu checkpoints\n",
                static_cast<unsigned long long>((*r)["replication"].value("epochs", uint64_t{0})));
  } else {
    PrintReplication((*r)["replication"]);
  }
  return kExitOk;
}

int DoPromote(const PromoteFlags& f) {
  auto r = CallApi(f.api, {{"op", "promote"}, {"force", f.force}, {"generation", f.generation}}, 60000);
  if (!r.ok()) {
    if (f.json_out) std::printf("%s\n", json{{"ok", false}, {"error", r.status().message()}}.dump().c_str());
    return Fail(r.status());
  }
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
  } else {
    std::printf("promoted: checkpoint %llu (%.1f ms old) running after %.2f ms\n",
                static_cast<unsigned long long>((*r)["epoch"].get<uint64_t>()), (*r)["since_commit_ms"].get<double>(),
                (*r)["promote_ms"].get<double>());
  }
  return kExitOk;
}

}  // namespace

void AddReplicationCommands(CLI::App& app, CommandFn* selected) {
  auto s = std::make_shared<StandbyFlags>();
  CLI::App* standby = app.add_subcommand("standby", "Hold a hot replica of a VM that `ferry replicate` keeps up to date");
  standby->add_option("--listen", s->listen, "HOST:PORT to listen on (port 0: any; the bound address is printed)")->required();
  AddSecurityFlags(standby, &s->security, /*listener=*/true);
  standby->add_option("--api", s->api, "Serve the standby's API (status, promote; the VM's once promoted)");
  standby->add_option("--disk", s->devices.disk, "This host's own copy of the disk image (same size; replication fills it)");
  standby->add_option("--net", s->devices.net, "TAP[,bridge=BR] for the NIC once promoted");
  standby->add_option("--io-timeout-ms", s->io_timeout_ms, "A primary silent this long is lost")->capture_default_str();
  standby->add_option("--min-generation", s->min_generation, "Refuse a primary whose VM generation is older (HA fencing)");
  standby->add_option("--lease-ms", s->lease_ms,
                      "HA watchdog: a VM this standby comes to run is fenced unless the \"lease\" is renewed within this")
      ->check(CLI::Range(uint64_t{0}, vmhost::kMaxLeaseMs));
  standby->add_option("--accept-timeout-s", s->accept_timeout_s, "Give up if no primary connects in time (0: wait)")->check(kFinite);
  standby->callback([selected, s] { *selected = [s] { return DoStandby(*s); }; });

  auto r = std::make_shared<ReplicateFlags>();
  CLI::App* rep = app.add_subcommand("replicate", "Replicate a running VM continuously to a `ferry standby`");
  rep->add_option("--api", r->api, "The primary VMM's API socket")->required();
  rep->add_option("--to", r->to, "HOST:PORT of the standby");
  AddSecurityFlags(rep, &r->security, /*listener=*/false);
  rep->add_option("--interval-ms", r->interval_ms, "Guest run time between checkpoints")->check(kFinite)->capture_default_str();
  rep->add_option("--max-interval-ms", r->max_interval_ms, "How far epochs may stretch when shipping is slow (0: 1000, at most half of --io-timeout-ms)")->check(kFinite)->capture_default_str();
  rep->add_option("--streams", r->streams, "Parallel TCP streams")->check(CLI::Range(1, 16))->capture_default_str();
  rep->add_option("--compress", r->compress, "zstd (where it pays) or none")->capture_default_str();
  rep->add_option("--io-timeout-ms", r->io_timeout_ms, "A standby silent this long is lost (the VM runs on unprotected)")->capture_default_str();
  rep->add_option("--wait-s", r->wait_s, "How long the initial sync may take before this command gives up waiting")->check(kFinite)->capture_default_str();
  rep->add_flag("--no-throttle", r->no_throttle, "Never throttle the vCPUs when checkpoints cannot keep up");
  rep->add_flag("--stop", r->stop, "End replication (the standby is told and exits)");
  rep->add_flag("--json", r->json_out, "Print the result as JSON");
  rep->callback([selected, r] { *selected = [r] { return DoReplicate(*r); }; });

  auto p = std::make_shared<PromoteFlags>();
  CLI::App* pro = app.add_subcommand("promote", "Activate a standby's replica from its last committed checkpoint");
  pro->add_option("--api", p->api, "The standby's API socket")->required();
  pro->add_option("--generation", p->generation, "The promoted VM's generation (default: the primary's plus one)")
      ->check(CLI::Range(uint64_t{0}, vmhost::kMaxGeneration));
  pro->add_flag("--force", p->force, "Promote even while the primary still replicates (stop the old primary yourself)");
  pro->add_flag("--json", p->json_out, "Print the result as JSON");
  pro->callback([selected, p] { *selected = [p] { return DoPromote(*p); }; });
}

}  // namespace ferry::cli
