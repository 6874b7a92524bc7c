// ferry status / pause / resume / snapshot / verify / stop: clients of a running VMM's API.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct ControlFlags {
  std::string api;
  bool json_out = false;
  std::string file;
  bool stop = false;
  bool no_fsync = false;
  bool force = false;
  int timeout_ms = 30000;
  bool force_resume = false;
  double seconds = 1.0;
  double interval_ms = 100;
  int percent = -1;
  int vcpu = -1;
};

// Performs the request and prints its result: JSON with --json, else through `human`.
// Returns the exit code; the response is left in *response for callers that judge it.
// The printers take the VMM's answer by value: a field it lacks (a VMM of another version)
// reads as null and its get<>() throws, which main() reports as an error with exit code 1,
// where a const json's operator[] on a missing key is undefined behaviour.
int Call(const ControlFlags& f, const json& request, const std::function<void(json)>& human,
         json* response = nullptr) {
  auto r = CallApi(f.api, request, f.timeout_ms + 5000);
  if (!r.ok()) {
    if (f.json_out) {
      std::printf("%s\n", json{{"ok", false}, {"error", r.status().message()}, {"code", ErrorCodeName(r.status().code())}}.dump().c_str());
    }
    return Fail(r.status());
  }
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
  } else {
    human(*r);
  }
  if (response) *response = *r;
  return kExitOk;
}

void PrintReplicationStatus(json rep) {
  if (rep.value("role", "") == "standby") {
    std::printf("standby:  %s, primary %s, checkpoint %llu (%.0f ms ago), %llu discarded%s%s\n",
                rep.value("state", "").c_str(), rep.value("primary", "").c_str(),
                static_cast<unsigned long long>(rep.value("committed_epoch", uint64_t{0})), rep.value("since_commit_ms", 0.0),
                static_cast<unsigned long long>(rep.value("discarded", uint64_t{0})),
                rep.value("error", "").empty() ? "" : "; ", rep.value("error", "").c_str());
    return;
  }
  std::printf("replica:  %s to %s, %llu checkpoints, interval %.0f ms, pause p50 %.2f ms, lag p50 %.1f ms%s%s\n",
              rep.value("state", "").c_str(), rep.value("standby", "").c_str(),
              static_cast<unsigned long long>(rep.value("epochs", uint64_t{0})), rep.value("interval_ms", 0.0),
              rep.value("pause_ms_p50", 0.0), rep.value("lag_ms_p50", 0.0), rep.value("error", "").empty() ? "" : "; ",
              rep.value("error", "").c_str());
}

void PrintStatus(json r) {
  std::printf("state:    %s\n", r["state"].get<std::string>().c_str());
  if (r.contains("replication") && r["replication"].is_object()) PrintReplicationStatus(r["replication"]);
  if (!r.contains("guest")) return;  // a standby: no VM runs here yet
  std::printf("guest:    %s %s\n", r["guest"].get<std::string>().c_str(), r["guest_args"].get<std::string>().c_str());
  std::printf("vcpus:    %u\nmemory:   %llu MiB\nuptime:   %llu ms\n", r["vcpus"].get<unsigned>(),
              static_cast<unsigned long long>(r["mem_bytes"].get<uint64_t>() >> 20),
              static_cast<unsigned long long>(r["uptime_ms"].get<uint64_t>()));
  std::printf("console:  %s\n", r["console_last_line"].get<std::string>().c_str());
  std::printf("report:   %s\n", r["report"]["text"].get<std::string>().c_str());
}

CLI::App* AddClient(CLI::App& app, const char* name, const char* help, std::shared_ptr<ControlFlags> f, bool with_json) {
  CLI::App* cmd = app.add_subcommand(name, help);
  cmd->add_option("--api", f->api, "The VMM's API socket")->required();
  if (with_json) cmd->add_flag("--json", f->json_out, "Print the result as JSON");
  return cmd;
}

}  // namespace

void AddControlCommands(CLI::App& app, CommandFn* selected) {
  auto f = std::make_shared<ControlFlags>();

  AddClient(app, "status", "Show a VM's state and its guest's latest report", f, true)->callback([=] {
    *selected = [f] { return Call(*f, {{"op", "status"}}, PrintStatus); };
  });
  AddClient(app, "pause", "Pause every vCPU of a VM", f, true)->callback([=] {
    *selected = [f] {
      return Call(*f, {{"op", "pause"}}, [](json r) {
        std::printf("paused in %.1f us\n", r["latency_us"].get<double>());
      });
    };
  });
  CLI::App* resume = AddClient(app, "resume", "Resume a paused VM", f, true);
  resume->add_flag("--force", f->force_resume,
                   "Resume a source whose migration commit went unanswered (only once the destination does not run it)");
  resume->callback([=] {
    *selected = [f] { return Call(*f, {{"op", "resume"}, {"force", f->force_resume}}, [](const json&) {
      std::printf("resumed\n");
    }); };
  });

  CLI::App* snap = AddClient(app, "snapshot", "Write a VM's complete state to a file (pauses it meanwhile)", f, true);
  snap->add_option("--file", f->file, "Snapshot file to write")->required();
  snap->add_flag("--stop", f->stop, "Stop the VM once the snapshot is safely written");
  snap->add_flag("--no-fsync", f->no_fsync, "Skip fsync (faster, not durable across a host crash)");
  snap->callback([=] {
    *selected = [f] {
      json req = {{"op", "snapshot"}, {"file", f->file}, {"stop", f->stop}, {"fsync", !f->no_fsync}};
      return Call(*f, req, [](json r) {
        std::printf("snapshot %s: %llu MiB RAM, %llu bytes written in %.1f ms (%.2f GiB/s), VM paused %.1f ms\n",
                    r["file"].get<std::string>().c_str(),
                    static_cast<unsigned long long>(r["ram_bytes"].get<uint64_t>() >> 20),
                    static_cast<unsigned long long>(r["file_bytes"].get<uint64_t>()), r["write_ms"].get<double>(),
                    r["gib_per_s"].get<double>(), r["downtime_ms"].get<double>());
      });
    };
  });

  CLI::App* verify = AddClient(app, "verify", "Ask a memcheck guest to verify all its pages now; exit 1 if any is bad", f, true);
  verify->add_option("--timeout-ms", f->timeout_ms, "How long to wait for the guest's verdict")
      ->check(CLI::Range(1, 3600000))->capture_default_str();
  verify->callback([=] {
    *selected = [f] {
      json response;
      int code = Call(*f, {{"op", "verify"}, {"timeout_ms", f->timeout_ms}}, [](json r) {
        std::printf("verify %s: %s\n", r["passed"].get<bool>() ? "passed" : "FAILED",
                    r["report"]["text"].get<std::string>().c_str());
      }, &response);
      return code == kExitOk && !response.value("passed", false) ? kExitError : code;
    };
  });

  CLI::App* rate = AddClient(app, "dirty-rate", "Measure how fast the guest dirties memory (pages/s, MB/s, per vCPU with --dirty-ring)", f, true);
  rate->add_option("--seconds", f->seconds, "Measurement window")->check(kFinite & CLI::Range(0.01, 600.0))->capture_default_str();
  rate->add_option("--interval-ms", f->interval_ms, "Harvest interval (a migration round's length)")
      ->check(kFinite & CLI::Range(1.0, 60000.0))->capture_default_str();
  rate->callback([=] {
    *selected = [f] {
      f->timeout_ms = static_cast<int>(f->seconds * 1000) + 30000;
      json req = {{"op", "dirty_rate"}, {"seconds", f->seconds}, {"interval_ms", f->interval_ms}};
      return Call(*f, req, [](json r) {
        std::printf("dirty rate (%s, %.1f s, %u harvests): %.0f pages/s = %.1f MB/s; harvest %.3f ms median\n",
                    r["source"].get<std::string>().c_str(), r["seconds"].get<double>(), r["harvests"].get<unsigned>(),
                    r["pages_per_s"].get<double>(), r["mb_per_s"].get<double>(), r["harvest_ms_median"].get<double>());
        const auto& per = r["per_vcpu_pages_per_s"];
        for (size_t i = 0; i < per.size(); ++i) {
          std::printf("  vCPU %zu: %.0f pages/s = %.1f MB/s\n", i, per[i].get<double>(), per[i].get<double>() * 4096 / 1e6);
        }
      });
    };
  });

  CLI::App* throttle = AddClient(app, "throttle", "Hold vCPUs off the CPU for a share of every 10 ms (0 = off)", f, true);
  throttle->add_option("--percent", f->percent, "Share of each period a vCPU is held off, 0..99")->required()->check(CLI::Range(0, 99));
  throttle->add_option("--vcpu", f->vcpu, "Only this vCPU (default: all)")->check(CLI::Range(-1, 255));
  throttle->callback([=] {
    *selected = [f] {
      return Call(*f, {{"op", "throttle"}, {"percent", f->percent}, {"vcpu", f->vcpu}}, [](json r) {
        std::printf("throttle: %s\n", r["throttle_percent"].dump().c_str());
      });
    };
  });

  CLI::App* stop = AddClient(app, "stop", "Ask the guest to shut down (or --force: stop the VM at once)", f, false);
  stop->add_flag("--force", f->force, "Stop the vCPUs now instead of asking the guest");
  stop->callback([=] {
    *selected = [f] { return Call(*f, {{"op", "stop"}, {"force", f->force}}, [](const json&) {}); };
  });
}

}  // namespace ferry::cli
