// ferry ha agent / ha status / ha evacuate / ha move / ha balance: the HA manager's commands
// (ha_agent.h); ferry ha corosync-conf: Corosync's config for the cluster (corosync_conf.h).
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "commands.h"
#include "ferry/base/clock.h"
#include "ferry/ha/corosync_conf.h"
#include "ferry/ha/json_fields.h"
#include "ha_agent.h"
#include "cli_util.h"

namespace ferry::cli {
namespace {

using ha::ArrayField;
using ha::BoolField;
using ha::CountField;
using ha::Field;
using ha::StringField;
using nlohmann::json;

struct HaFlags {
  std::string config;
  std::string host;    // status/evacuate: which agent to ask (default: the first that answers)
  std::string target;  // evacuate: the host to empty
  bool json_out = false;
  bool cancel = false;
  bool dry_run = false;
  std::string vm, to;  // move
  double timeout_s = 120;
  double wait_corosync_s = 30;  // agent: how long a Corosync that is not up yet is waited for
};

// Asks an agent: the named host's, or the first in the config that answers.
Result<json> AskAgent(const ha::ClusterConfig& c, const std::string& host, const json& req, int timeout_ms = 5000) {
  std::string errors;
  for (const auto& h : c.hosts) {
    if (!host.empty() && h.name != host) continue;
    auto r = CallApi(AgentSocket(h), req, timeout_ms);
    if (r.ok()) return r;
    errors += "\n  " + h.name + ": " + r.status().message();
  }
  if (!host.empty() && !c.Host(host)) return InvalidArgument("no host named " + host + " in the config");
  return NotFound("no HA agent answered:" + errors);
}

int DoAgent(const HaFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  return RunHaAgent(*c, f.config, f.wait_corosync_s);
}

// An agent's status answer as text. Read field by field whatever its shape (an agent of
// another version): a missing or mistyped field prints as its default.
void PrintStatus(const json& r) {
  const json cl = Field(r, "cluster");
  std::printf("cluster seen from %s: %s, members", StringField(r, "host").c_str(),
              BoolField(cl, "quorate") ? "quorate" : "NO QUORUM");
  for (const auto& m : ArrayField(cl, "members")) std::printf(" %s", m.is_string() ? m.get<std::string>().c_str() : "?");
  std::printf("\n");
  for (const auto& h : ArrayField(cl, "hosts")) {
    std::printf("  host %-8s %-7s%s", StringField(h, "name").c_str(), BoolField(h, "member") ? "up" : "DOWN",
                BoolField(h, "evacuating") ? " evacuating" : "");
    for (const auto& i : ArrayField(h, "instances")) {
      const uint64_t silent = CountField(i, "silent_ms");
      std::printf("  %s:%s(g%llu%s%s)", StringField(i, "vm").c_str(), StringField(i, "role").c_str(),
                  static_cast<unsigned long long>(CountField(i, "generation")), BoolField(i, "fenced") ? ",fenced" : "",
                  silent ? (",SILENT " + std::to_string(silent / 1000) + "s").c_str() : "");
    }
    std::printf("\n");
  }
  for (const auto& v : ArrayField(cl, "vms")) {
    std::printf("  vm %-8s on %-8s generation %llu  %s  replication %s -> %s\n", StringField(v, "name").c_str(),
                StringField(v, "owner", "-").c_str(), static_cast<unsigned long long>(CountField(v, "generation")),
                StringField(v, "state", "?").c_str(), StringField(v, "replication", "none").c_str(),
                StringField(v, "standby_host", "-").c_str());
  }
}

int DoStatus(const HaFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  auto r = AskAgent(*c, f.host, {{"op", "status"}});
  if (!r.ok()) return Fail(r.status().message());
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
  } else {
    PrintStatus(*r);
  }
  return kExitOk;
}

// Evacuated: nothing left on the host, and every VM running elsewhere.
bool Evacuated(const json& status, const std::string& host, std::string* why) {
  const json cl = Field(status, "cluster");
  if (!cl.is_object()) {
    *why = "the agent's answer has no cluster view";
    return false;
  }
  for (const auto& h : ArrayField(cl, "hosts")) {
    if (StringField(h, "name") == host && !ArrayField(h, "instances").empty()) {
      *why = std::to_string(ArrayField(h, "instances").size()) + " instance(s) still on " + host;
      return false;
    }
  }
  for (const auto& v : ArrayField(cl, "vms")) {
    if (StringField(v, "owner") == host || StringField(v, "state") != "running") {
      *why = "vm " + StringField(v, "name") + " is not running elsewhere yet";
      return false;
    }
  }
  return true;
}

int DoEvacuate(const HaFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  if (!c->Host(f.target)) return Fail("no host named " + f.target + " in " + f.config, kExitUsage);
  // Ask an agent on another host when there is one: the evacuated host's may go away.
  std::string via = f.host;
  auto r = AskAgent(*c, via, {{"op", "evacuate"}, {"host", f.target}, {"on", !f.cancel}});
  if (!r.ok()) return Fail(r.status().message());
  if (f.cancel) {
    std::printf("%s may hold VMs again\n", f.target.c_str());
    return kExitOk;
  }
  const uint64_t t0 = MonotonicNs();
  std::string why;
  json last;
  while (MonotonicNs() - t0 < static_cast<uint64_t>(f.timeout_s * 1e9)) {
    usleep(200 * 1000);
    auto s = AskAgent(*c, via, {{"op", "status"}});
    if (!s.ok()) continue;
    last = *s;
    if (Evacuated(last, f.target, &why)) {
      double ms = (MonotonicNs() - t0) / 1e6;
      json handovers = json::array();
      for (const auto& e : ArrayField(last, "events")) {
        if (StringField(e, "kind") == "handed-over") handovers.push_back(e);
      }
      if (f.json_out) {
        std::printf("%s\n", json{{"ok", true}, {"host", f.target}, {"ms", ms}, {"vms", ArrayField(Field(last, "cluster"), "vms")}}.dump().c_str());
      } else {
        std::printf("%s is empty after %.0f ms:\n", f.target.c_str(), ms);
        PrintStatus(last);
      }
      return kExitOk;
    }
  }
  return Fail("evacuating " + f.target + " did not finish in " + std::to_string(static_cast<int>(f.timeout_s)) + " s: " + why);
}

int DoBalance(const HaFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  auto r = AskAgent(*c, f.host, {{"op", "balance"}, {"dry_run", f.dry_run}});
  if (!r.ok()) return Fail(r.status().message());
  if (f.json_out) {
    std::printf("%s\n", r->dump().c_str());
    return kExitOk;
  }
  const json moves = ArrayField(*r, "moves");
  if (moves.empty()) std::printf("nothing to move: the placement policy holds\n");
  for (const auto& m : moves) {
    std::printf("%s %s: %s -> %s (%s)\n", f.dry_run ? "would move" : "moving", StringField(m, "vm").c_str(),
                StringField(m, "from").c_str(), StringField(m, "to").c_str(), StringField(m, "why").c_str());
  }
  for (const auto& n : ArrayField(*r, "notes")) std::printf("note: %s\n", n.is_string() ? n.get<std::string>().c_str() : "?");
  const json moving = Field(*r, "moving");
  if (moving.is_object()) {
    for (const auto& [vm, to] : moving.items()) std::printf("in flight: %s -> %s\n", vm.c_str(), to.is_string() ? to.get<std::string>().c_str() : "?");
  }
  return kExitOk;
}

// Live-migrates one VM to a host (a handover to a standby there) and waits for it to run there.
int DoMove(const HaFlags& f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  auto r = AskAgent(*c, f.host, {{"op", "move"}, {"vm", f.vm}, {"to", f.to}, {"on", !f.cancel}});
  if (!r.ok()) return Fail(r.status().message());
  if (f.cancel) {
    std::printf("move of %s cancelled\n", f.vm.c_str());
    return kExitOk;
  }
  const uint64_t t0 = MonotonicNs();
  while (MonotonicNs() - t0 < static_cast<uint64_t>(f.timeout_s * 1e9)) {
    usleep(100 * 1000);
    auto s = AskAgent(*c, f.host, {{"op", "status"}});
    if (!s.ok()) continue;
    for (const auto& v : ArrayField(Field(*s, "cluster"), "vms")) {
      if (StringField(v, "name") != f.vm || StringField(v, "owner") != f.to || StringField(v, "state") != "running") continue;
      double downtime = -1;
      for (const auto& e : ArrayField(*s, "events")) {
        if (StringField(e, "kind") == "handed-over" && StringField(e, "vm") == f.vm && StringField(e, "to") == f.to) {
          downtime = ha::NumberField(e, "downtime_ms", -1.0);
        }
      }
      const double ms = (MonotonicNs() - t0) / 1e6;
      json out = {{"ok", true}, {"vm", f.vm}, {"to", f.to}, {"ms", ms}, {"generation", CountField(v, "generation")}};
      if (downtime >= 0) out["downtime_ms"] = downtime;
      if (f.json_out) {
        std::printf("%s\n", out.dump().c_str());
      } else {
        std::printf("%s runs on %s after %.0f ms (generation %llu)\n", f.vm.c_str(), f.to.c_str(), ms,
                    static_cast<unsigned long long>(CountField(v, "generation")));
      }
      return kExitOk;
    }
  }
  return Fail("moving " + f.vm + " to " + f.to + " did not finish in " + std::to_string(static_cast<int>(f.timeout_s)) + " s");
}

struct CorosyncFlags {
  std::string config, out, cluster_name;
  ha::CorosyncSpec spec;  // timers and keyfile as given; nodes from the config
  std::string cipher, hash;  // "": aes256 / sha256 (none / none with --insecure-no-crypto)
  bool insecure_no_crypto = false;
  bool keep_key = false, replace_key = false;
};

// Renders DIR/corosync.conf for the config's hosts (nodeid, name, address as ring0_addr) and
// writes DIR/authkey; the library validates and writes, this parses and prints.
int DoCorosyncConf(CorosyncFlags f) {
  auto c = ha::ClusterConfig::Load(f.config);
  if (!c.ok()) return Fail(c.status().message(), kExitUsage);
  ha::CorosyncSpec& spec = f.spec;
  spec.cluster_name = f.cluster_name.empty() ? c->name : f.cluster_name;
  for (const auto& h : c->hosts) spec.nodes.push_back({h.nodeid, h.name, h.address});
  spec.allow_no_crypto = f.insecure_no_crypto;
  if (f.insecure_no_crypto) {
    spec.cipher = ha::CorosyncCipher::kNone;
    spec.hash = ha::CorosyncHash::kNone;
  }
  if (!f.cipher.empty() && !ha::ParseCorosyncCipher(f.cipher, &spec.cipher)) {
    return Fail("--cipher: unknown cipher " + f.cipher + " (aes256, aes192, aes128)", kExitUsage);
  }
  if (!f.hash.empty() && !ha::ParseCorosyncHash(f.hash, &spec.hash)) {
    return Fail("--hash: unknown hash " + f.hash + " (sha256, sha384, sha512)", kExitUsage);
  }
  auto conf = ha::RenderCorosyncConf(spec);
  if (!conf.ok()) return Fail(conf.status());
  for (const auto& w : conf->warnings) std::fprintf(stderr, "ferry: WARNING: %s\n", w.c_str());

  if (::mkdir(f.out.c_str(), 0700) != 0 && errno != EEXIST) return Fail(ErrnoError("mkdir " + f.out));
  const std::string conf_path = f.out + "/corosync.conf", key_path = f.out + "/authkey";
  const bool keyed = spec.hash != ha::CorosyncHash::kNone;
  std::string key_note;
  if (keyed && f.keep_key && ::access(key_path.c_str(), F_OK) == 0) {
    if (Status st = ha::CheckCorosyncAuthkey(key_path); !st.ok()) return Fail(st.Annotate("--keep-key"));
    key_note = "kept " + key_path;
  } else if (keyed) {
    Status st = ha::WriteCorosyncAuthkey(key_path, {.overwrite = f.replace_key});
    if (st.code() == ErrorCode::kRefused) {
      return Fail(key_path + " exists: --keep-key to keep it, --replace-key for a new one (then on every host)", kExitRefused);
    }
    if (!st.ok()) return Fail(st);
    key_note = "wrote " + key_path + " (" + std::to_string(ha::kCorosyncAuthkeyBytes) + " random bytes, mode 0400)";
  }
  if (Status st = ha::WriteCorosyncConf(conf_path, conf->text); !st.ok()) return Fail(st);

  std::printf("wrote %s: cluster %s, knet, crypto %s/%s, token %d ms, %zu nodes:", conf_path.c_str(),
              spec.cluster_name.c_str(), ha::CorosyncCipherName(spec.cipher), ha::CorosyncHashName(spec.hash),
              spec.token_ms, spec.nodes.size());
  for (const auto& n : spec.nodes) std::printf(" %s=%s(%u)", n.name.c_str(), n.ring0_addr.c_str(), n.nodeid);
  std::printf("\n");
  if (!keyed) {
    std::printf("no authkey: Corosync runs without authentication on this cluster\n");
    return kExitOk;
  }
  std::printf("%s\n", key_note.c_str());
  std::printf("copy both to every host; every host needs the SAME authkey, or it cannot join:\n"
              "  install -D -m 0644 %s /etc/corosync/corosync.conf\n"
              "  install -D -m 0400 -o root -g root %s %s\n"
              "then restart corosync on each host\n",
              conf_path.c_str(), key_path.c_str(), spec.keyfile.c_str());
  return kExitOk;
}

void AddCorosyncConfCommand(CLI::App* ha, CommandFn* selected) {
  auto f = std::make_shared<CorosyncFlags>();
  CLI::App* cc = ha->add_subcommand(
      "corosync-conf", "Write corosync.conf for the config's hosts (knet, aes256/sha256) and a fresh shared authkey");
  cc->add_option("--config", f->config, "The cluster's HA config (JSON): hosts' node ids, names, addresses")
      ->required()->check(CLI::ExistingFile);
  cc->add_option("--out", f->out, "Write DIR/corosync.conf and DIR/authkey (DIR is created, mode 0700)")->required();
  cc->add_option("--cluster-name", f->cluster_name, "Corosync's cluster_name (default: the config's name)");
  cc->add_option("--token-ms", f->spec.token_ms, "Token timeout: how long until a silent node is declared failed")
      ->capture_default_str();
  cc->add_option("--token-coefficient-ms", f->spec.token_coefficient_ms, "Added to the token per node past two")
      ->capture_default_str();
  cc->add_option("--consensus-ms", f->spec.consensus_ms, "0: 1.2 * token")->capture_default_str();
  cc->add_option("--knet-ping-interval-ms", f->spec.knet_ping_interval_ms, "knet link pings (0 and 0: from the token)");
  cc->add_option("--knet-ping-timeout-ms", f->spec.knet_ping_timeout_ms, "knet declares a link dead after this");
  cc->add_option("--keyfile", f->spec.keyfile, "Where every host keeps the authkey (written into corosync.conf)")
      ->capture_default_str();
  cc->add_option("--cipher", f->cipher, "aes256 (default), aes192 or aes128");
  cc->add_option("--hash", f->hash, "sha256 (default), sha384 or sha512");
  cc->add_flag("--insecure-no-crypto", f->insecure_no_crypto,
               "Cipher and hash none (or what --cipher/--hash say): Corosync traffic in the clear and "
               "unauthenticated, anyone on the network can join; only for a lab");
  auto* keep = cc->add_flag("--keep-key", f->keep_key, "Keep DIR/authkey if it exists (only the config is rewritten)");
  cc->add_flag("--replace-key", f->replace_key, "Replace DIR/authkey (every host then needs the new one)")->excludes(keep);
  cc->callback([selected, f] { *selected = [f] { return DoCorosyncConf(*f); }; });
}

}  // namespace

void AddHaCommands(CLI::App& app, CommandFn* selected) {
  CLI::App* ha = app.add_subcommand("ha", "The HA manager: per-host agents on Corosync, failover, evacuation");
  ha->require_subcommand(1);
  auto f = std::make_shared<HaFlags>();
  CLI::App* agent = ha->add_subcommand("agent", "Run this host's HA agent (in the host's network namespace, next to its Corosync)");
  agent->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  agent->add_option("--wait-corosync-s", f->wait_corosync_s, "Wait this long for a Corosync that is not up yet (0: fail at once)")
      ->check(CLI::Range(0.0, 3600.0));
  agent->callback([selected, f] { *selected = [f] { return DoAgent(*f); }; });

  CLI::App* status = ha->add_subcommand("status", "Show the cluster: members, quorum, where every VM runs and its protection");
  status->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  status->add_option("--host", f->host, "Ask this host's agent (default: the first that answers)");
  status->add_flag("--json", f->json_out, "Print the agent's answer as JSON");
  status->callback([selected, f] { *selected = [f] { return DoStatus(*f); }; });

  CLI::App* evac = ha->add_subcommand("evacuate", "Live-move every VM (and standby) off a host, then show it empty");
  evac->add_option("HOST", f->target, "The host to empty")->required();
  evac->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  evac->add_option("--host", f->host, "Ask this host's agent (default: the first that answers)");
  evac->add_option("--timeout-s", f->timeout_s, "Give up waiting after this long")->capture_default_str();
  evac->add_flag("--cancel", f->cancel, "Let the host hold VMs again");
  evac->add_flag("--json", f->json_out, "Print the result as JSON");
  evac->callback([selected, f] { *selected = [f] { return DoEvacuate(*f); }; });

  CLI::App* bal = ha->add_subcommand("balance", "Apply the config's placement policy now: live-move VMs off overloaded hosts");
  bal->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  bal->add_option("--host", f->host, "Ask this host's agent (default: the first that answers)");
  bal->add_flag("--dry-run", f->dry_run, "Only show what would move, and why");
  bal->add_flag("--json", f->json_out, "Print the plan as JSON");
  bal->callback([selected, f] { *selected = [f] { return DoBalance(*f); }; });

  CLI::App* mv = ha->add_subcommand("move", "Live-migrate one VM to a host (zero downtime beyond the handover's own)");
  mv->add_option("VM", f->vm, "The VM")->required();
  mv->add_option("HOST", f->to, "Where it should run")->required();
  mv->add_option("--config", f->config, "The cluster's HA config (JSON)")->required()->check(CLI::ExistingFile);
  mv->add_option("--host", f->host, "Ask this host's agent (default: the first that answers)");
  mv->add_option("--timeout-s", f->timeout_s, "Give up waiting after this long")->capture_default_str();
  mv->add_flag("--cancel", f->cancel, "Cancel a move in flight");
  mv->add_flag("--json", f->json_out, "Print the result as JSON");
  mv->callback([selected, f] { *selected = [f] { return DoMove(*f); }; });

  AddCorosyncConfCommand(ha, selected);
}

}  // namespace ferry::cli
