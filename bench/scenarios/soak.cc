// bench/soak: does a VMM leak under a steady control load? A 64 MiB memcheck VM (1 vCPU) gets
// API calls at a fixed rate, each on a fresh connection as the CLI and the HA agent make
// them: mostly status, pause/resume pairs, an occasional verify, and malformed requests
// (wrong types, an unknown op or field, NaN sent as null) that must be refused with
// invalid_argument. Periodically a snapshot to a scratch file (removed after) and a 0.5 s
// dirty-rate probe. Every --sample-every-s one JSON line on stdout:
//   {"t_s":X,"calls":N,"rss_kib":N,"vsz_kib":N,"maps":N,"threads":N,"fds":N,"errors":N}
// and at the end a verdict line: growth per 10,000 calls after the warm-up (least-squares
// slope over the post-warm-up samples; the first-to-last difference beside it), flat or not,
// and health (no unexpected reply, the VMM alive, the VM running, a final verify passes, and
// the VMM stops on request without crashing). Exit 0 if flat and healthy, 1 otherwise, 2 on
// bad flags.
//
//   soak_bench [--duration-s 3600] [--rate 50] [--snapshot-every-s 60] [--dirty-rate-every-s 30]
//              [--sample-every-s 10] [--warmup-s 60] [--guest memcheck] [--json-only] [--no-vm]
//
// --no-vm soaks `ferry incoming` instead (a VMM with an API and no VM, for hosts without
// /dev/kvm): status answers, and every op that needs a VM must be refused with "refused".
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "ferry/base/clock.h"
#include "ferry/vmhost/api_client.h"
#include "proc_usage.h"
#include "scenario_util.h"

namespace ferry::bench {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Growth per 10,000 calls at or above these is not flat. 0.5 on a count means "less than one
// more mapping/thread/fd every 20,000 calls": a fitted line through samples that only jitter.
constexpr double kRssLimitKib = 1024;
constexpr double kCountLimit = 0.5;
constexpr double kPerCalls = 10000;

struct Options {
  double duration_s = 3600;
  double rate = 50;
  double snapshot_every_s = 60;
  double dirty_rate_every_s = 30;
  double sample_every_s = 10;
  double warmup_s = 60;
  std::string guest = "memcheck";
  bool json_only = false;
  bool no_vm = false;
};

// SIGINT/SIGTERM end the soak early (the verdict says so); the VMM and files are cleaned up.
volatile sig_atomic_t g_stop = 0;

// Requests the decoder must refuse before the VM sees them. The NaN is written by the JSON
// encoder as null, which is how a NaN reaches a VMM in practice.
const json& MalformedRequests() {
  static const json all = {
      {{"op", "verify"}, {"timeout_ms", "soon"}},
      {{"op", "frobnicate"}},
      {{"op", "dirty_rate"}, {"seconds", std::numeric_limits<double>::quiet_NaN()}},
      {{"op", "pause"}, {"force", true}},
      {{"op", "snapshot"}, {"file", 42}},
      {{"op", "throttle"}, {"percent", -1}},
      {{"op", 7}},
      {{"op", "resume"}, {"force", "yes"}},
  };
  return all;
}

// Which request the i-th paced call is: per 100 calls two pause/resume pairs and three
// malformed requests, per 1,000 one verify, the rest status.
const char* MixKind(uint64_t i) {
  if (i % 1000 == 500) return "verify";
  switch (i % 100) {
    case 10: case 60: return "pause";
    case 11: case 61: return "resume";
    case 30: case 50: case 80: return "malformed";
    default: return "status";
  }
}

struct KindStats {
  uint64_t calls = 0, refused_as_expected = 0, unexpected = 0;
};

class Soak {
 public:
  Soak(const Options& o, std::string sock) : o_(o), sock_(std::move(sock)) {}

  // One call; anything but the expected outcome counts as an error. Returns the reply.
  Result<json> Call(const char* kind, const json& request, ErrorCode expect, int timeout_ms = 30000) {
    uint64_t t0 = MonotonicNs();
    auto r = vmhost::CallApi(sock_, request, timeout_ms);
    if (std::string(kind) == "status") status_ms_.push_back((MonotonicNs() - t0) / 1e6);
    ++calls_;
    KindStats& k = kinds_[kind];
    ++k.calls;
    ErrorCode got = r.ok() ? ErrorCode::kOk : r.status().code();
    if (got == expect) {
      if (expect != ErrorCode::kOk) ++k.refused_as_expected;
    } else {
      ++k.unexpected;
      ++errors_;
      Note(std::string(kind) + " " + request.dump() + ": expected " + ErrorCodeName(expect) + ", got " +
           (r.ok() ? std::string("ok") : std::string(ErrorCodeName(got)) + " (" + r.status().message() + ")"));
    }
    return r;
  }

  // What an op that needs a VM must get: done, or refused where none runs.
  ErrorCode NeedsVm() const { return o_.no_vm ? ErrorCode::kRefused : ErrorCode::kOk; }

  void Paced(uint64_t i) {
    std::string kind = MixKind(i);
    if (kind == "status") {
      (void)Call("status", {{"op", "status"}}, ErrorCode::kOk);
    } else if (kind == "pause" || kind == "resume") {
      (void)Call(kind.c_str(), {{"op", kind}}, NeedsVm());
    } else if (kind == "verify") {
      (void)Verify();
    } else {
      const json& all = MalformedRequests();
      (void)Call("malformed", all[malformed_++ % all.size()], ErrorCode::kInvalidArgument);
    }
  }

  // True if the verify went as expected: passed, or refused where no VM runs.
  bool Verify() {
    uint64_t errors = errors_;
    auto r = Call("verify", {{"op", "verify"}}, NeedsVm(), 60000);
    if (r.ok() && !r->value("passed", false)) {
      ++errors_;
      Note("verify did not pass: " + r->dump());
    }
    return errors_ == errors;
  }

  void Snapshot(const std::string& file) {
    auto r = Call("snapshot", {{"op", "snapshot"}, {"file", file}}, NeedsVm(), 120000);
    if (r.ok() && ::access(file.c_str(), F_OK) != 0) {
      ++errors_;
      Note("snapshot replied ok but wrote no " + file);
    }
    ::unlink(file.c_str());
  }

  void DirtyRate() { (void)Call("dirty_rate", {{"op", "dirty_rate"}, {"seconds", 0.5}}, NeedsVm()); }

  void Note(const std::string& what) {
    if (notes_.size() < 20) notes_.push_back(what);
    if (!o_.json_only) std::fprintf(stderr, "soak: %s\n", what.c_str());
  }

  uint64_t calls() const { return calls_; }
  uint64_t errors() const { return errors_; }
  const std::vector<std::string>& notes() const { return notes_; }
  const std::vector<double>& status_ms() const { return status_ms_; }
  json KindsJson() const {
    json out = json::object();
    for (const auto& [k, s] : kinds_) {
      out[k] = {{"calls", s.calls}, {"refused_as_expected", s.refused_as_expected}, {"unexpected", s.unexpected}};
    }
    return out;
  }

 private:
  const Options& o_;
  const std::string sock_;
  uint64_t calls_ = 0, errors_ = 0, malformed_ = 0;
  std::map<std::string, KindStats> kinds_;
  std::vector<std::string> notes_;
  std::vector<double> status_ms_;
};

struct Sample {
  double t_s, calls;
  ProcUsage u;
};

// Growth after the warm-up per 10,000 calls: fitted slope, and last minus first sample.
json Growth(const std::vector<Sample>& post, bool* flat) {
  struct Metric {
    const char* name;
    double ProcUsage::*field;
    double limit;
  };
  const Metric metrics[] = {{"rss_kib", &ProcUsage::rss_kib, kRssLimitKib},
                            {"maps", &ProcUsage::maps, kCountLimit},
                            {"threads", &ProcUsage::threads, kCountLimit},
                            {"fds", &ProcUsage::fds, kCountLimit}};
  json slope = json::object(), net = json::object(), limits = json::object();
  *flat = post.size() >= 3;  // a line through fewer points says nothing
  std::vector<double> x;
  for (const Sample& s : post) x.push_back(s.calls);
  for (const Metric& m : metrics) {
    std::vector<double> y;
    for (const Sample& s : post) y.push_back(s.u.*m.field);
    double per = Slope(x, y) * kPerCalls;
    slope[m.name] = std::round(per * 1000) / 1000;
    net[m.name] = post.empty() ? 0 : y.back() - y.front();
    limits[m.name] = m.limit;
    if (!(per < m.limit)) *flat = false;
  }
  return {{"growth_per_10k_calls", slope}, {"net_post_warmup", net}, {"limits_per_10k_calls", limits}};
}

// Starts the VMM and waits until its API answers (a memcheck VM: until it reports
// verification). Returns the VMM's pid from its status, or -1.
pid_t StartVmm(const Options& o, const e2e::TempDir& dir, const std::string& sock, std::unique_ptr<e2e::Process>* vmm) {
  std::vector<std::string> argv = {e2e::FerryBin(), "incoming", "--listen", "127.0.0.1:0", "--api", sock};
  if (!o.no_vm) {
    argv = {e2e::FerryBin(), "run", e2e::GuestPath(o.guest), "--mem", "64M", "--vcpus", "1", "--api", sock};
  }
  *vmm = std::make_unique<e2e::Process>(argv, dir.File("vmm"));
  json status;
  bool ready = e2e::WaitUntil([&] {
    if ((*vmm)->Wait(0) != -1) return true;  // it exited: nothing to wait for
    auto r = vmhost::CallApi(sock, {{"op", "status"}}, 2000);
    if (r.ok()) status = *r;
    return r.ok() && (o.no_vm || status["report"]["fields"].contains("verify_seq"));
  }, 30000);
  if (!ready || (*vmm)->Wait(0) != -1 || !status.contains("pid")) {
    std::fprintf(stderr, "soak: the VMM did not come up: %s\n", (*vmm)->Stderr().c_str());
    return -1;
  }
  return status["pid"].get<pid_t>();
}

// Samples `pid` into `samples` (and one JSON line on stdout); false once it is gone.
bool TakeSample(pid_t pid, double t_s, const Soak& soak, std::vector<Sample>* samples) {
  Sample s{t_s, static_cast<double>(soak.calls()), {}};
  if (!ReadProcUsage(pid, &s.u)) return false;
  samples->push_back(s);
  auto whole = [](double v) { return static_cast<int64_t>(v); };
  ordered_json line = {{"t_s", std::round(t_s * 10) / 10}, {"calls", soak.calls()},
                       {"rss_kib", whole(s.u.rss_kib)}, {"vsz_kib", whole(s.u.vsz_kib)},
                       {"maps", whole(s.u.maps)}, {"threads", whole(s.u.threads)},
                       {"fds", whole(s.u.fds)}, {"errors", soak.errors()}};
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
  return true;
}

struct Health {
  bool alive = false, running = false, verified = false, stopped_cleanly = false;
  int vmm_exit = -1;
  bool ok(const Soak& soak) const {
    return alive && running && verified && stopped_cleanly && soak.errors() == 0 && !g_stop;
  }
};

ordered_json Verdict(const Options& o, const Soak& soak, const std::vector<Sample>& samples, double elapsed_s,
                     const Health& h, bool* pass) {
  std::vector<Sample> post;
  for (const Sample& s : samples) {
    if (s.t_s >= o.warmup_s) post.push_back(s);
  }
  bool flat = false;
  json growth = Growth(post, &flat);
  *pass = flat && h.ok(soak);
  auto round = [](double v, double per_unit) { return std::round(v * per_unit) / per_unit; };
  return {{"verdict", *pass ? "pass" : "fail"}, {"flat", flat}, {"healthy", h.ok(soak)},
          {"mode", o.no_vm ? "no-vm (ferry incoming)" : "vm (" + o.guest + ", 64M, 1 vCPU)"},
          {"method", "least-squares slope over post-warm-up samples"},
          {"duration_s", round(elapsed_s, 10)}, {"rate", o.rate}, {"calls", soak.calls()},
          {"calls_per_s", round(soak.calls() / elapsed_s, 10)}, {"warmup_s", o.warmup_s},
          {"samples_post_warmup", post.size()},
          {"post_warmup_calls", post.size() >= 2 ? static_cast<uint64_t>(post.back().calls - post.front().calls) : 0},
          {"growth_per_10k_calls", growth["growth_per_10k_calls"]}, {"net_post_warmup", growth["net_post_warmup"]},
          {"limits_per_10k_calls", growth["limits_per_10k_calls"]}, {"errors", soak.errors()},
          {"by_kind", soak.KindsJson()}, {"vmm_alive", h.alive}, {"vm_running", h.running},
          {"final_verify", h.verified ? (o.no_vm ? "refused as expected" : "passed") : "failed"},
          {"status_ms_p50", round(Median(soak.status_ms()), 1000)},
          {"status_ms_p99", round(Percentile(soak.status_ms(), 0.99), 1000)},
          {"stopped_cleanly", h.stopped_cleanly}, {"vmm_exit", h.vmm_exit}, {"interrupted", g_stop != 0},
          {"first_errors", soak.notes()}};
}

int Run(const Options& o) {
  e2e::TempDir dir;
  const std::string sock = dir.File("vmm.sock");
  std::unique_ptr<e2e::Process> vmm;
  const pid_t pid = StartVmm(o, dir, sock, &vmm);
  if (pid < 0) return 1;

  Soak soak(o, sock);
  std::vector<Sample> samples;
  const uint64_t start = MonotonicNs();
  auto at = [&](double s) { return start + static_cast<uint64_t>(s * 1e9); };
  auto t_s = [&] { return (MonotonicNs() - start) / 1e9; };
  const uint64_t end = at(o.duration_s);
  uint64_t paced = 0;
  double next_sample = 0, next_snapshot = o.snapshot_every_s, next_dirty = o.dirty_rate_every_s;
  bool gone = false;
  // One thread does everything, so a sample never lands in the middle of a call.
  while (!g_stop && !gone) {
    uint64_t now = MonotonicNs();
    if (now >= end) break;
    if (now >= at(next_sample)) {
      gone = !TakeSample(pid, t_s(), soak, &samples);
      next_sample += o.sample_every_s;
    } else if (now >= at(next_snapshot)) {
      soak.Snapshot(dir.File("soak.snap"));
      next_snapshot += o.snapshot_every_s;
    } else if (now >= at(next_dirty)) {
      soak.DirtyRate();
      next_dirty += o.dirty_rate_every_s;
    } else if (now >= at(paced / o.rate)) {
      soak.Paced(paced++);  // behind schedule (after a snapshot), calls catch up back to back
    } else {
      uint64_t wake = std::min({at(paced / o.rate), at(next_sample), at(next_snapshot), at(next_dirty), end});
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<uint64_t>(wake - now, 50000000)));
    }
  }
  const double elapsed_s = t_s();
  if (!gone) gone = !TakeSample(pid, elapsed_s, soak, &samples);

  // Health: the VMM still runs and answers, its VM runs and verifies (no-vm: refuses), and it
  // stops on request without crashing.
  Health h;
  h.alive = vmm->Wait(0) == -1 && !gone;
  auto last = soak.Call("status", {{"op", "status"}}, ErrorCode::kOk);
  h.running = last.ok() && (o.no_vm ? last->value("state", "") == "incoming"
                                    : last->value("vm_state", "") == "running");
  h.verified = h.alive && soak.Verify();
  // Not counted as a call: a VMM may exit before its reply to a forced stop is out.
  (void)vmhost::CallApi(sock, {{"op", "stop"}, {"force", true}}, 5000);
  h.vmm_exit = vmm->Wait(10000);
  h.stopped_cleanly = h.vmm_exit >= 0 && h.vmm_exit < 128;

  bool pass = false;
  ordered_json verdict = Verdict(o, soak, samples, elapsed_s, h, &pass);
  std::printf("%s\n", verdict.dump().c_str());
  std::fflush(stdout);
  if (!o.json_only) {
    const auto& g = verdict["growth_per_10k_calls"];
    std::fprintf(stderr,
                 "soak: %s: %llu calls in %.0f s; per 10k calls RSS %+.1f KiB, maps %+.2f, threads %+.2f, fds %+.2f; "
                 "%llu errors\n",
                 pass ? "pass" : "fail", static_cast<unsigned long long>(soak.calls()), elapsed_s,
                 g["rss_kib"].get<double>(), g["maps"].get<double>(), g["threads"].get<double>(),
                 g["fds"].get<double>(), static_cast<unsigned long long>(soak.errors()));
  }
  return pass ? 0 : 1;
}

int Usage() {
  std::fprintf(stderr,
               "usage: soak_bench [--duration-s 3600] [--rate 50] [--snapshot-every-s 60] [--dirty-rate-every-s 30]\n"
               "                  [--sample-every-s 10] [--warmup-s 60] [--guest memcheck] [--json-only] [--no-vm]\n");
  return 2;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  using namespace ferry::bench;
  Options o;
  const std::map<std::string, double*> numbers = {
      {"--duration-s", &o.duration_s}, {"--rate", &o.rate}, {"--snapshot-every-s", &o.snapshot_every_s},
      {"--dirty-rate-every-s", &o.dirty_rate_every_s}, {"--sample-every-s", &o.sample_every_s},
      {"--warmup-s", &o.warmup_s}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--json-only") {
      o.json_only = true;
    } else if (k == "--no-vm") {
      o.no_vm = true;
    } else if (k == "--guest" && i + 1 < argc) {
      o.guest = argv[++i];
    } else if (auto it = numbers.find(k); it != numbers.end() && i + 1 < argc) {
      char* rest = nullptr;
      *it->second = std::strtod(argv[++i], &rest);
      if (*rest != '\0' || !(*it->second >= 0) || *it->second > 1e7) return Usage();
    } else {
      return Usage();
    }
  }
  if (o.rate <= 0 || o.sample_every_s <= 0 || o.snapshot_every_s <= 0 || o.dirty_rate_every_s <= 0) return Usage();
  if (o.guest != "memcheck") {
    std::fprintf(stderr, "soak: only memcheck can be soaked (the verify calls need it)\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return Run(o);
}
