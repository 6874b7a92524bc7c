// ferry incoming / ferry migrate: the two ends of a live migration.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "cli_util.h"
#include "commands.h"
#include "device_flags.h"
#include "security_flags.h"
#include "ferry/base/units.h"
#include "ferry/migrate/incoming.h"
#include "ferry/migrate/migration.h"
#include "ferry/vmhost/api_client.h"
#include "ferry/vmhost/process.h"
#include "ferry/vmhost/requests.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct IncomingFlags {
  std::string listen;
  SecurityFlags security;
  std::string api;
  DeviceFlags devices;
  double accept_timeout_s = 0;
  uint64_t min_generation = 0;
  uint64_t io_timeout_ms = 20000;
};

struct MigrateFlags {
  std::string api;
  std::string to;
  SecurityFlags security;
  uint32_t streams = 2;
  std::string compress = "zstd";
  double downtime_ms = 50;
  std::string bandwidth;
  double deadline_s = 120;
  std::string xbzrle_cache;  // empty: the VMM's default (64 MiB, at most the VM's RAM)
  std::string transport = "tcp";
  bool no_auto_converge = false;
  std::string mode = "precopy";
  uint64_t io_timeout_ms = 20000;
  double postcopy_after_s = 0;
  bool verify = false;
  bool json_out = false;
};

int DoIncoming(const IncomingFlags& f) {
  migrate::IncomingOptions o;
  o.listen = f.listen;
  o.accept_timeout_ms = static_cast<uint64_t>(f.accept_timeout_s * 1000);
  o.min_generation = f.min_generation;
  o.io_timeout_ms = f.io_timeout_ms;
  o.console = StdoutConsole();
  auto overrides = f.devices.Overrides();
  if (!overrides.ok()) return Fail(overrides.status().message());
  o.devices = *overrides;
  auto security = f.security.Load();
  if (!security.ok()) return Fail(security.status());
  o.security = std::move(security).value();
  if (f.accept_timeout_s < 0) return Fail("--accept-timeout-s must not be negative", kExitUsage);
  return ExitCodeFor(vmhost::RunIncoming(o, f.api));
}

int DoMigrate(const MigrateFlags& f) {
  if (f.downtime_ms <= 0 || f.downtime_ms > 60000) return Fail("--downtime-ms must be in (0, 60000]", kExitUsage);
  if (f.deadline_s < 0.1 || f.deadline_s > 7 * 86400) return Fail("--deadline-s must be 0.1 .. 604800", kExitUsage);
  json req = {{"op", "migrate"}, {"to", f.to}, {"streams", f.streams}, {"compress", f.compress},
              {"downtime_ms", f.downtime_ms}, {"deadline_ms", static_cast<uint64_t>(f.deadline_s * 1000)},
              {"transport", f.transport}, {"auto_converge", !f.no_auto_converge}, {"verify", f.verify}};
  if (auto ep = migrate::ParseEndpoint(f.to); !ep.ok()) return Fail("--to: " + ep.status().message(), kExitUsage);
  if (f.compress != "zstd" && f.compress != "none") return Fail("--compress must be zstd or none", kExitUsage);
  auto mode = migrate::ParseMigrationMode(f.mode);
  if (!mode) return Fail("--mode must be precopy, postcopy or auto", kExitUsage);
  req["mode"] = f.mode;
  req["io_timeout_ms"] = f.io_timeout_ms;
  if (f.postcopy_after_s != 0) {
    if (*mode != migrate::MigrationMode::kAuto) return Fail("--postcopy-after-s needs --mode auto", kExitUsage);
    if (f.postcopy_after_s < 0.001 || f.postcopy_after_s > 7 * 86400) return Fail("--postcopy-after-s must be 0.001 .. 604800", kExitUsage);
    req["postcopy_after_ms"] = static_cast<uint64_t>(f.postcopy_after_s * 1000);
  }
  if (!f.bandwidth.empty()) {
    std::string b = f.bandwidth;
    if (b.size() > 2 && b.substr(b.size() - 2) == "/s") b.resize(b.size() - 2);
    auto bw = ParseSize(b);
    if (!bw.ok() || *bw == 0) return Fail("--bandwidth: expected bytes per second, e.g. 100M", kExitUsage);
    req["bandwidth"] = *bw;
  }
  if (!f.xbzrle_cache.empty()) {  // unset: the VMM's default, cut to what the VM and host allow
    auto cache = ParseSize(f.xbzrle_cache);
    if (!cache.ok()) return Fail("--xbzrle-cache: " + cache.status().message(), kExitUsage);
    if (uint64_t avail = vmhost::HostMemAvailable(); avail && *cache > avail / 2) {
      return Fail("--xbzrle-cache " + f.xbzrle_cache + " is more than half of this host's available memory", kExitUsage);
    }
    req["xbzrle_cache"] = *cache;
  }
  auto security = f.security.Load();
  if (!security.ok()) return Fail(security.status());
  vmhost::SecurityToRequest(*security, &req);  // the API socket is owner-only
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [tty](const json& p) {
    if (!tty) return;
    std::fprintf(stderr, "\r\033[K%-16s sent %8.1f MB  left %8llu pages  %7.1f MB/s  dirty %7.1f MB/s  "
                 "predicted downtime %6.1f ms  throttle %2u%%",
                 p.value("progress", "").c_str(), p.value("sent_bytes", 0.0) / 1e6,
                 static_cast<unsigned long long>(p.value("remaining_pages", uint64_t{0})), p.value("rate_mb_s", 0.0),
                 p.value("dirty_mb_s", 0.0), p.value("predicted_downtime_ms", 0.0), p.value("throttle", 0u));
  };
  // The call's timeout bounds silence between progress lines, not the whole migration.
  auto r = vmhost::CallApi(f.api, req, 60000, progress);
  if (tty) std::fprintf(stderr, "\n");
  if (!r.ok()) {
    bool unknown = r.status().code() == ErrorCode::kIndeterminate;
    if (f.json_out) {
      std::printf("%s\n", json{{"ok", false}, {"converged", false}, {"indeterminate", unknown},
                               {"error", r.status().message()}}.dump().c_str());
    }
    return Fail(r.status());
  }
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
  } else {
    json s = *r;  // by value: a missing field reads as null (see Call in cmd_control.cc)
    std::printf("migrated to %s: downtime %.1f ms (guest saw %.1f ms), total %.0f ms, %u rounds, %.1f MB on the wire, "
                "throttle max %u%%%s\n",
                s["destination"].get<std::string>().c_str(), s["downtime_ms"].get<double>(),
                s["guest_pause_ms"].get<double>(), s["total_ms"].get<double>(), s["rounds"].get<unsigned>(),
                s["bytes"].get<uint64_t>() / 1e6, s["throttle_max"].get<unsigned>(),
                !s["verified"].get<bool>() ? "" : s["verify_passed"].get<bool>() ? ", verification passed" : ", VERIFICATION FAILED");
    if (const json& p = s.value("postcopy", json::object()); p.value("used", false)) {
      std::printf("post-copy (%s): %llu pages followed the VM in %.0f ms; %llu faults (p50 %.0f us, p99 %.0f us), %llu pages "
                  "on demand, %llu in the background; held %llu frames and %llu disk bytes until the last page\n",
                  p.value("reason", "").c_str(), static_cast<unsigned long long>(p.value("outstanding_pages", uint64_t{0})),
                  p.value("ms", 0.0), static_cast<unsigned long long>(p.value("faults", uint64_t{0})), p.value("fault_p50_us", 0.0),
                  p.value("fault_p99_us", 0.0), static_cast<unsigned long long>(p.value("requested_pages", uint64_t{0})),
                  static_cast<unsigned long long>(p.value("placed_pages", uint64_t{0})),
                  static_cast<unsigned long long>(p.value("held_frames", uint64_t{0})),
                  static_cast<unsigned long long>(p.value("held_disk_bytes", uint64_t{0})));
    }
  }
  if ((*r)["verified"].get<bool>() && !(*r)["verify_passed"].get<bool>()) return kExitError;
  return kExitOk;
}

}  // namespace

void AddMigrateCommands(CLI::App& app, CommandFn* selected) {
  auto in = std::make_shared<IncomingFlags>();
  CLI::App* incoming = app.add_subcommand("incoming", "Wait for a live migration, then run the migrated VM here");
  incoming->add_option("--listen", in->listen, "HOST:PORT to listen on (port 0: any; the bound address is printed)")->required();
  AddSecurityFlags(incoming, &in->security, /*listener=*/true);
  incoming->add_option("--api", in->api, "Serve the migrated VM's JSON API on this unix socket");
  incoming->add_option("--min-generation", in->min_generation, "Refuse a source whose VM generation is older (HA fencing)");
  AddDeviceFlags(incoming, &in->devices);
  incoming->add_option("--io-timeout-ms", in->io_timeout_ms,
                       "A source silent this long has failed (in post-copy: the VM is dropped here and the source resumes)")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  incoming->add_option("--accept-timeout-s", in->accept_timeout_s, "Give up if no source connects in time (0: wait)")
      ->check(kFinite);
  incoming->callback([selected, in] { *selected = [in] { return DoIncoming(*in); }; });

  auto m = std::make_shared<MigrateFlags>();
  CLI::App* mig = app.add_subcommand("migrate", "Live-migrate a running VM to a `ferry incoming` destination");
  mig->add_option("--api", m->api, "The source VMM's API socket")->required();
  mig->add_option("--to", m->to, "HOST:PORT of the destination")->required();
  AddSecurityFlags(mig, &m->security, /*listener=*/false);
  mig->add_option("--streams", m->streams, "Parallel TCP streams")->check(CLI::Range(1, 16))->capture_default_str();
  mig->add_option("--compress", m->compress, "zstd (where it pays) or none")->capture_default_str();
  mig->add_option("--downtime-ms", m->downtime_ms, "Target downtime of the final stop-and-copy")->check(kFinite)->capture_default_str();
  mig->add_option("--bandwidth", m->bandwidth, "Cap on bytes per second over all streams (e.g. 100M)");
  mig->add_option("--deadline-s", m->deadline_s, "Give up (the VM runs on here) if not converged by then")->check(kFinite)->capture_default_str();
  mig->add_option("--xbzrle-cache", m->xbzrle_cache, "Cache of sent pages for delta encoding (default 64M, at most the VM's RAM)");
  mig->add_option("--transport", m->transport, "tcp or rdma")->capture_default_str();
  mig->add_flag("--no-auto-converge", m->no_auto_converge, "Never throttle the vCPUs");
  mig->add_option("--mode", m->mode,
                  "precopy; postcopy (run on the destination at once, pull RAM on demand); auto (pre-copy, post-copy "
                  "instead of throttling when pre-copy cannot converge)")
      ->capture_default_str();
  mig->add_option("--io-timeout-ms", m->io_timeout_ms,
                  "A destination silent this long has failed (before the end of post-copy: the VM resumes here)")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  mig->add_option("--postcopy-after-s", m->postcopy_after_s, "With --mode auto: switch to post-copy after this long")
      ->check(kFinite);
  mig->add_flag("--verify", m->verify, "Have the guest verify itself on the destination (memcheck)");
  mig->add_flag("--json", m->json_out, "Print the final statistics as JSON");
  mig->callback([selected, m] { *selected = [m] { return DoMigrate(*m); }; });
}

}  // namespace ferry::cli
