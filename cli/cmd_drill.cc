// ferry drill: a fault injected on purpose into a running HA cluster, with a load client on
// the VM's service, and a scorecard: detection, promotion, RTO as the client saw it, RPO in
// checkpoints, acknowledged writes lost, and whether two primaries ever served.
//
// Faults: --kill-host H (every process in H's network namespace SIGKILLed and its uplink cut),
// --partition-host H (its uplink cut, healed after --heal-after-s; the old primary must then
// rejoin without serving), --kill-vm V (the VM's process SIGKILLed). Host faults need the
// config's netns/uplink (test clusters); the load client runs in client_netns.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "commands.h"
#include "ferry/base/clock.h"
#include "ferry/ha/config.h"
#include "ha_agent.h"
#include "subprocess.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

using nlohmann::json;

struct DrillFlags {
  std::string config, kill_host, partition_host, kill_vm, vm;
  double rate = 400;
  uint32_t keys = 64;
  double heal_after_s = 2;
  double timeout_s = 30;
  bool json_out = false;
};

// Runs argv (no shell) to completion, bounded; returns its exit status and stdout.
Result<json> Agent(const ha::HostConfig& h, const json& req) { return CallApi(AgentSocket(h), req, 3000); }

// The first agent that answers, preferring hosts other than `avoid`.
Result<json> AnyAgent(const ha::ClusterConfig& c, const std::string& avoid) {
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& h : c.hosts) {
      if ((pass == 0) == (h.name == avoid)) continue;
      auto r = Agent(h, {{"op", "status"}});
      if (r.ok() && r->value("/cluster/quorate"_json_pointer, false)) return r;
    }
  }
  return NotFound("no quorate HA agent answered");
}

json VmEntry(const json& status, const std::string& vm) {
  for (const auto& v : status["cluster"]["vms"]) {
    if (v.value("name", "") == vm) return v;
  }
  return json();
}

// The first event on `status`'s host at or after t_ms matching kind (and vm, if given).
uint64_t EventTime(const json& status, uint64_t t_ms, const std::vector<std::string>& kinds, const std::string& vm,
                   std::string* detail = nullptr) {
  for (const auto& e : status["events"]) {
    uint64_t t = e.value("t_ms", uint64_t{0});
    if (t < t_ms) continue;
    if (!vm.empty() && e.value("vm", "") != vm && !e.value("vm", "").empty()) continue;
    for (const auto& k : kinds) {
      if (e.value("kind", "") == k) {
        if (detail) *detail = e.value("detail", "");
        return t;
      }
    }
  }
  return 0;
}

int Drill(const DrillFlags& f) {
  auto loaded = ha::ClusterConfig::Load(f.config);
  if (!loaded.ok()) return Fail(loaded.status().message(), kExitUsage);
  const ha::ClusterConfig& c = *loaded;
  int faults = !f.kill_host.empty() + !f.partition_host.empty() + !f.kill_vm.empty();
  if (faults != 1) return Fail("give exactly one of --kill-host, --partition-host, --kill-vm", kExitUsage);
  std::string fault = !f.kill_host.empty() ? "kill-host" : !f.partition_host.empty() ? "partition-host" : "kill-vm";
  std::string target = f.kill_host + f.partition_host + f.kill_vm;
  auto before = AnyAgent(c, f.kill_host + f.partition_host);
  if (!before.ok()) return Fail(before.status().message());

  // The VM under test: the one named, or the first with a service owned by the faulted host.
  std::string vm = fault == "kill-vm" ? target : f.vm;
  if (vm.empty()) {
    for (const auto& v : (*before)["cluster"]["vms"]) {
      const ha::VmSpec* spec = c.Vm(v.value("name", ""));
      if (v.value("owner", "") == target && spec && !spec->service.empty()) vm = spec->name;
    }
  }
  const ha::VmSpec* spec = c.Vm(vm);
  if (!spec) return Fail(vm.empty() ? "no VM with a service runs on " + target : "no VM named " + vm + " in the config", kExitUsage);
  if (spec->service.empty() || c.client_netns.empty()) {
    return Fail("a drill measures RTO with a load client: vm " + vm + " needs \"service\" and the config \"client_netns\"", kExitUsage);
  }
  json entry = VmEntry(*before, vm);
  std::string owner = entry.value("owner", "");
  const uint64_t old_gen = entry.value("generation", uint64_t{0});
  if (entry.value("replication", "") != "protected") {
    return Fail("vm " + vm + " is not protected right now (replication: " + entry.value("replication", "none") +
                "): the drill would lose it; wait until `ferry ha status` shows it protected");
  }
  const ha::HostConfig* fault_host = c.Host(fault == "kill-vm" ? owner : target);
  if (!fault_host) return Fail("no host named " + target + " in the config", kExitUsage);
  if (fault != "kill-vm" && owner != target) return Fail("vm " + vm + " runs on " + owner + ", not on " + target, kExitUsage);
  if (fault != "kill-vm" && (fault_host->netns.empty() || fault_host->uplink.empty())) {
    return Fail("host " + target + " has no netns/uplink in the config: host faults are for test clusters", kExitUsage);
  }
  const std::string old_sock = fault_host->dir + "/" + vm + ".sock";

  // The load client, in the client namespace, until SIGINT.
  std::string client_out = fault_host->dir + "/drill-client.json";
  char self_exe[4096] = {};
  if (::readlink("/proc/self/exe", self_exe, sizeof self_exe - 1) <= 0) return Fail("cannot find the ferry binary");
  pid_t client = fork();
  if (client == 0) {
    int fd = ::open(client_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) ::dup2(fd, 1);
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 2);
    execlp("ip", "ip", "netns", "exec", c.client_netns.c_str(), self_exe, "kv-load", "--server",
           spec->service.c_str(), "--rate", std::to_string(f.rate).c_str(), "--keys", std::to_string(f.keys).c_str(),
           "--duration-s", "0", "--timeout-ms", "3000", "--json", static_cast<char*>(nullptr));
    _exit(127);
  }
  // The old primary, sampled: its acknowledged checkpoints and the frames it sent.
  std::atomic<bool> sampling{true};
  std::mutex mu;
  std::vector<std::pair<uint64_t, uint64_t>> tx;  // (t_ms, tx_frames)
  uint64_t last_epochs = 0;
  std::thread sampler([&] {
    while (sampling) {
      auto r = CallApi(old_sock, {{"op", "status"}}, 500);
      if (r.ok()) {
        std::lock_guard lock(mu);
        tx.emplace_back(RealtimeMs(), (*r).value("/devices/nic/tx_frames"_json_pointer, uint64_t{0}));
        if ((*r)["replication"].is_object()) last_epochs = std::max(last_epochs, (*r)["replication"].value("epochs", uint64_t{0}));
      }
      usleep(20 * 1000);
    }
  });
  auto finish_client = [&]() -> json {
    if (client > 0) {
      ::kill(client, SIGINT);
      int st;
      waitpid(client, &st, 0);
      client = -1;
    }
    std::ifstream in(client_out);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str(), line;
    std::istringstream lines(text);
    json last;
    while (std::getline(lines, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object()) last = j;
    }
    return last;
  };
  auto abort_with = [&](const std::string& why) {
    sampling = false;
    sampler.join();
    finish_client();
    if (fault == "partition-host") RunQuiet({"ip", "link", "set", fault_host->uplink, "up"});
    return Fail("drill " + fault + " " + target + ": " + why);
  };
  usleep(1500 * 1000);  // load running, checkpoints flowing

  const uint64_t t_fault = RealtimeMs();
  if (fault == "kill-host") {
    std::string pids;
    RunQuiet({"ip", "netns", "pids", fault_host->netns}, &pids);
    std::istringstream ps(pids);
    for (pid_t p; ps >> p;) ::kill(p, SIGKILL);
    RunQuiet({"ip", "link", "set", fault_host->uplink, "down"});
  } else if (fault == "partition-host") {
    RunQuiet({"ip", "link", "set", fault_host->uplink, "down"});
  } else {
    auto st = CallApi(old_sock, {{"op", "status"}}, 2000);
    if (!st.ok()) return abort_with("cannot reach the VM's API: " + st.status().message());
    ::kill((*st)["pid"].get<pid_t>(), SIGKILL);
  }

  // Wait for the VM to run again at a newer generation.
  json now, new_entry;
  const ha::HostConfig* new_host = nullptr;
  while (RealtimeMs() - t_fault < f.timeout_s * 1000) {
    usleep(50 * 1000);
    auto s = AnyAgent(c, fault == "kill-vm" ? "" : target);
    if (!s.ok()) continue;
    json e = VmEntry(*s, vm);
    if (e.value("generation", uint64_t{0}) > old_gen && e.value("state", "") == "running") {
      new_host = c.Host(e.value("owner", ""));
      new_entry = e;
      break;
    }
  }
  if (!new_host) return abort_with("the VM was not running again after " + std::to_string(f.timeout_s) + " s");
  auto ns = Agent(*new_host, {{"op", "status"}});
  if (!ns.ok()) return abort_with("the new owner's agent: " + ns.status().message());
  std::string promote_detail;
  uint64_t t_detect = fault == "kill-vm" ? EventTime(*ns, t_fault, {"claim"}, vm)
                                          : EventTime(*ns, t_fault, {"member-left"}, "");
  uint64_t t_promoted = EventTime(*ns, t_fault, {"promoted"}, vm, &promote_detail);
  uint64_t committed = 0;
  if (auto p = promote_detail.find("checkpoint "); p != std::string::npos) committed = std::stoull(promote_detail.substr(p + 11));

  json extra = json::object();
  if (fault == "partition-host") {
    // The minority must have fenced before the majority promoted.
    auto old_agent = Agent(*fault_host, {{"op", "status"}});
    uint64_t t_fenced = old_agent.ok() ? EventTime(*old_agent, t_fault, {"fence"}, vm) : 0;
    extra["fenced_after_ms"] = t_fenced ? static_cast<int64_t>(t_fenced - t_fault) : -1;
    extra["fenced_before_promote"] = t_fenced != 0 && t_fenced <= t_promoted;
    usleep(static_cast<useconds_t>(f.heal_after_s * 1e6));
    RunQuiet({"ip", "link", "set", fault_host->uplink, "up"});
    // The old primary must stop, and its host come back as a backup (not serving).
    std::string rejoined = "none";
    const uint64_t t_heal = RealtimeMs();
    while (RealtimeMs() - t_heal < 30000) {
      usleep(100 * 1000);
      auto s = Agent(*fault_host, {{"op", "status"}});
      if (!s.ok()) continue;
      bool primary = false, standby = false;
      for (const auto& i : (*s)["local"]) {
        if (i.value("vm", "") != vm) continue;
        primary |= i.value("role", "") == "primary";
        standby |= i.value("role", "") == "standby" && i.value("state", "") == "replicating";
      }
      if (!primary && standby) {
        rejoined = "standby";
        break;
      }
    }
    extra["rejoined_as"] = rejoined;
    extra["rejoin_ms"] = RealtimeMs() - t_heal;
  } else {
    usleep(2000 * 1000);  // the client sees the service back
  }
  sampling = false;
  sampler.join();
  json load = finish_client();
  if (!load.is_object()) return Fail("drill: the load client printed no result (see " + client_out + ")");

  // Two primaries served if the old one sent frames after the new one started, or the client
  // read a value going backwards or one a reply had shown that was then gone.
  uint64_t tx_before = 0, tx_after = 0;
  for (const auto& [t, n] : tx) {
    if (t <= t_promoted) tx_before = n;
    else tx_after = std::max(tx_after, n);
  }
  bool old_sent_after = tx_after > tx_before;
  uint64_t stale = load.value("stale_reads", uint64_t{0}), unreflected = load.value("unreflected_replies", uint64_t{0});
  json card = {{"fault", fault + " " + target},
               {"vm", vm},
               {"from", fault_host->name},
               {"to", new_host->name},
               {"generation", new_entry.value("generation", uint64_t{0})},
               {"detect_ms", t_detect ? static_cast<int64_t>(t_detect - t_fault) : -1},
               {"promote_ms", t_detect && t_promoted ? static_cast<int64_t>(t_promoted - t_detect) : -1},
               {"rto_ms", load.value("client_gap_ms", 0.0)},
               {"rpo_epochs", committed ? static_cast<int64_t>(last_epochs + 1 > committed ? last_epochs + 1 - committed : 0) : -1},
               {"lost_writes", load.value("lost_puts", uint64_t{0})},
               {"split_brain", old_sent_after || stale > 0 || unreflected > 0},
               {"stale_reads", stale},
               {"unreflected_replies", unreflected},
               {"acked_puts", load.value("acked_puts", uint64_t{0})}};
  card.update(extra);
  if (f.json_out) {
    std::printf("%s\n", card.dump().c_str());
  } else {
    std::printf("drill %s: %s moved %s -> %s (generation %llu)\n", card["fault"].get<std::string>().c_str(), vm.c_str(),
                fault_host->name.c_str(), new_host->name.c_str(),
                static_cast<unsigned long long>(card["generation"].get<uint64_t>()));
    std::printf("  detection %lld ms, promotion %lld ms, RTO (client) %.0f ms, RPO %lld checkpoint(s)\n",
                static_cast<long long>(card["detect_ms"].get<int64_t>()), static_cast<long long>(card["promote_ms"].get<int64_t>()),
                card["rto_ms"].get<double>(), static_cast<long long>(card["rpo_epochs"].get<int64_t>()));
    std::printf("  acknowledged writes lost: %llu of %llu; two primaries: %s\n",
                static_cast<unsigned long long>(card["lost_writes"].get<uint64_t>()),
                static_cast<unsigned long long>(card["acked_puts"].get<uint64_t>()), card["split_brain"].get<bool>() ? "YES" : "never");
    if (extra.contains("rejoined_as")) {
      std::printf("  minority fenced %lld ms after the cut (%s the promotion); after healing the old host is: %s\n",
                  static_cast<long long>(extra["fenced_after_ms"].get<int64_t>()),
                  extra["fenced_before_promote"].get<bool>() ? "before" : "NOT before", extra["rejoined_as"].get<std::string>().c_str());
    }
  }
  bool bad = card["lost_writes"].get<uint64_t>() > 0 || card["split_brain"].get<bool>();
  return bad ? kExitError : kExitOk;
}

}  // namespace

void AddDrillCommand(CLI::App& app, CommandFn* selected) {
  auto f = std::make_shared<DrillFlags>();
  CLI::App* d = app.add_subcommand("drill", "Inject a fault into an HA cluster under load and print a scorecard");
  d->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  d->add_option("--kill-host", f->kill_host, "SIGKILL every process of this host and cut its link");
  d->add_option("--partition-host", f->partition_host, "Cut this host off the others, heal after --heal-after-s");
  d->add_option("--kill-vm", f->kill_vm, "SIGKILL this VM's process");
  d->add_option("--vm", f->vm, "The VM whose service the client loads (default: the first on the faulted host)");
  d->add_option("--rate", f->rate, "Client requests per second")->capture_default_str();
  d->add_option("--keys", f->keys, "Client keys (the guest's keys= must be at least this)")->capture_default_str();
  d->add_option("--heal-after-s", f->heal_after_s, "Partition: heal this long after the promotion")->capture_default_str();
  d->add_option("--timeout-s", f->timeout_s, "Give up if the VM is not running again by then")->capture_default_str();
  d->add_flag("--json", f->json_out, "Print the scorecard as one JSON object");
  d->callback([selected, f] { *selected = [f] { return Drill(*f); }; });
}

}  // namespace ferry::cli
