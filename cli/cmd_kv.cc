// ferry kv-load: drive a kvstore guest with GET/PUT load and report what its clients saw.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "kv_load.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

struct KvLoadFlags {
  KvLoadOptions options;
  double duration_s = 10;
  bool no_verify = false;
  bool json_out = false;
};

void PrintSummary(const KvLoadOptions& o, const KvLoadResult& r) {
  std::printf("kv-load %s: %llu requests in %.2f s (%.0f/s), %llu unanswered, %llu bad replies, %llu late\n",
              o.server.c_str(), static_cast<unsigned long long>(r.sent), r.duration_ms / 1000, r.send_rate,
              static_cast<unsigned long long>(r.unanswered), static_cast<unsigned long long>(r.bad_replies),
              static_cast<unsigned long long>(r.late_replies));
  std::printf("  PUT: %llu sent, %llu acknowledged, %llu errors\n", static_cast<unsigned long long>(r.puts_sent),
              static_cast<unsigned long long>(r.acked_puts), static_cast<unsigned long long>(r.put_errors));
  std::printf("  GET: %llu sent, %llu answered, %llu errors, %llu stale\n",
              static_cast<unsigned long long>(r.gets_sent),
              static_cast<unsigned long long>(r.gets_answered), static_cast<unsigned long long>(r.get_errors),
              static_cast<unsigned long long>(r.stale_reads));
  std::printf("  longest gap without a reply: %.1f ms, from %.3f s; latency p50 %.3f ms, p99 %.3f ms, max %.1f ms\n",
              r.client_gap_ms, r.gap_start_ms / 1000, r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms);
  if (o.verify) {
    std::printf("  verification: %llu keys read back in %.0f ms, %llu unverifiable, %llu acknowledged PUTs lost\n",
                static_cast<unsigned long long>(r.verified_keys), r.verify_ms,
                static_cast<unsigned long long>(r.unverifiable_keys), static_cast<unsigned long long>(r.lost_puts));
  }
  for (const auto& a : r.anomalies) std::printf("  ! %s\n", a.c_str());
}

int DoKvLoad(KvLoadFlags& f) {
  KvLoadOptions& o = f.options;
  if (!(f.duration_s >= 0 && f.duration_s <= 1e9)) {
    std::fprintf(stderr, "ferry kv-load: --duration-s must be 0 (until stopped) or a number of seconds\n");
    return kExitUsage;
  }
  o.duration_ms = static_cast<uint64_t>(std::llround(f.duration_s * 1000));
  o.verify = !f.no_verify;
  if (Status st = ValidateKvLoadOptions(o); !st.ok()) {
    std::fprintf(stderr, "ferry kv-load: %s\n", st.message().c_str());
    return kExitUsage;
  }
  std::atomic<bool> stop{false};
  SignalWatcher signals([&stop] { stop = true; });  // ends the sending phase; stragglers and verification still run
  auto r = RunKvLoad(o, stop);
  if (!r.ok()) {
    if (f.json_out) std::printf("%s\n", nlohmann::json{{"ok", false}, {"error", r.status().message()}}.dump().c_str());
    std::fprintf(stderr, "ferry kv-load: %s\n", r.status().message().c_str());
    return kExitError;
  }
  std::string failure = KvLoadFailure(*r);
  if (f.json_out) {
    nlohmann::json j = KvLoadResultJson(*r);
    j["ok"] = failure.empty();
    if (!failure.empty()) j["error"] = failure;
    std::printf("%s\n", j.dump().c_str());
  } else {
    PrintSummary(o, *r);
  }
  std::fflush(stdout);
  if (!failure.empty()) {
    std::fprintf(stderr, "ferry kv-load: FAILED: %s\n", failure.c_str());
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

void AddKvCommands(CLI::App& app, CommandFn* selected) {
  auto f = std::make_shared<KvLoadFlags>();
  KvLoadOptions& o = f->options;
  CLI::App* cmd =
      app.add_subcommand("kv-load", "Load a kvstore guest over UDP; report reply gaps, stale reads, lost PUTs");
  cmd->footer("Sends GET/PUT requests at a fixed rate (open loop), then reads every acknowledged key back.\n"
              "Exit 0 if no acknowledged PUT was lost, no read was stale, every key was read back and at\n"
              "least one PUT was acknowledged; 1 otherwise (the reason on stderr); 2 for usage errors.\n"
              "SIGINT/SIGTERM ends the sending early; late replies and the read-back still run.");
  cmd->add_option("--server", o.server, "HOST:PORT of the kvstore (numeric IPv4, or [IPv6])")->required();
  cmd->add_option("--bind", o.bind, "Local ADDR or ADDR:PORT to send from");
  cmd->add_option("--rate", o.rate, "Requests per second (open loop: sent whether or not replies come)")
      ->capture_default_str();
  cmd->add_option("--duration-s", f->duration_s, "How long to send (0: until SIGINT/SIGTERM)")->capture_default_str();
  cmd->add_option("--keys", o.keys, "Keys 0..N-1 to cycle through (the guest's keys= must be at least N)")
      ->capture_default_str();
  cmd->add_option("--put-percent", o.put_percent, "Share of requests that are PUTs")
      ->check(CLI::Range(0, 100))->capture_default_str();
  cmd->add_option("--timeout-ms", o.timeout_ms, "Wait for late replies after sending, and per verification attempt")
      ->capture_default_str();
  cmd->add_flag("--no-verify", f->no_verify, "Skip reading every written key back at the end");
  cmd->add_flag("--json", f->json_out, "Print the result as one JSON object");
  cmd->callback([selected, f] { *selected = [f] { return DoKvLoad(*f); }; });
}

}  // namespace ferry::cli
