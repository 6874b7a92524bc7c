#include "standby_host.h"

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "vmm_host.h"

namespace ferry::cli {

using nlohmann::json;

namespace {

json StandbyJson(const replication::StandbyStatus& s) {
  return {{"role", "standby"}, {"state", s.state}, {"primary", s.primary}, {"error", s.error},
          {"generation", s.generation}, {"handed_over", s.handed_over}, {"committed_epoch", s.committed_epoch}, {"discarded", s.discarded},
          {"since_commit_ms", s.since_commit_ms}, {"apply_ms_p50", s.apply_ms_p50}, {"wire_bytes", s.wire_bytes},
          {"disk_bytes", s.disk_bytes}, {"refused_peers", s.refused_peers}};
}

class StandbyHost {
 public:
  explicit StandbyHost(std::unique_ptr<replication::Standby> standby) : standby_(std::move(standby)) {}
  int Run(const std::string& api_path);

 private:
  json Handle(const json& req, const ApiEmit& emit);
  json Promote(bool force, uint64_t generation);

  std::unique_ptr<replication::Standby> standby_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<hypervisor::Vm> vm_;  // guarded by mu_: the promoted VM; kept until the end
  bool stop_ = false;                   // guarded by mu_
  bool session_over_ = false;           // guarded by mu_
};

json StandbyHost::Promote(bool force, uint64_t generation) {
  replication::PromoteStats stats;
  auto vm = standby_->Promote(force, generation, &stats);
  if (!vm.ok()) return {{"ok", false}, {"error", vm.status().message()}};
  std::fprintf(stderr, "ferry standby: promoted: checkpoint %llu (%.1f ms old) running %.2f ms after the request\n",
               static_cast<unsigned long long>(stats.epoch), stats.since_commit_ms, stats.promote_ms);
  SetVmGeneration(stats.generation);
  std::lock_guard lock(mu_);
  vm_ = std::move(vm).value();
  cv_.notify_all();
  return {{"ok", true}, {"epoch", stats.epoch}, {"generation", stats.generation}, {"since_commit_ms", stats.since_commit_ms},
          {"promote_ms", stats.promote_ms}};
}

json StandbyHost::Handle(const json& req, const ApiEmit& emit) {
  hypervisor::Vm* vm;
  {
    std::lock_guard lock(mu_);
    vm = vm_.get();
  }
  if (vm) return HandleApiRequest(*vm, req, emit);  // promoted: a VM like any other
  std::string op = req.value("op", "");
  if (op == "status") {
    return {{"ok", true}, {"state", "standby"}, {"pid", getpid()}, {"replication", StandbyJson(standby_->status())},
            {"ha", HaJson()}};
  }
  if (op == "promote") return Promote(req.value("force", false), req.value("generation", uint64_t{0}));
  if (op == "stop") {
    std::lock_guard lock(mu_);
    stop_ = true;
    standby_->Cancel();
    cv_.notify_all();
    return {{"ok", true}};
  }
  return {{"ok", false}, {"error", "this is a standby: status, promote or stop (the rest once promoted)"}};
}

int StandbyHost::Run(const std::string& api_path) {
  SignalWatcher signals([this] {
    std::lock_guard lock(mu_);
    if (vm_) {
      vm_->Stop();
    } else {
      stop_ = true;
      standby_->Cancel();
      cv_.notify_all();
    }
  });
  std::unique_ptr<ApiServer> api;
  if (!api_path.empty()) {
    auto server = ApiServer::Start(api_path, [this](const json& r, const ApiEmit& emit) { return Handle(r, emit); });
    if (!server.ok()) {
      std::fprintf(stderr, "ferry: %s\n", server.status().message().c_str());
      return kExitError;
    }
    api = std::move(server).value();
  }
  std::thread receiver([this] {
    Status why = standby_->Run();
    auto s = standby_->status();
    if (s.state == "primary-lost") {
      if (s.committed_epoch > 0) {
        std::fprintf(stderr, "ferry standby: primary lost (%s); the replica holds checkpoint %llu: `ferry promote` activates it\n",
                     why.message().c_str(), static_cast<unsigned long long>(s.committed_epoch));
      } else {
        std::fprintf(stderr, "ferry standby: primary lost before a whole checkpoint arrived (%s)\n", why.message().c_str());
      }
    } else if (s.state == "ended") {
      std::fprintf(stderr, "ferry standby: %s\n", why.message().c_str());
    }
    auto handed = standby_->TakeHandedOver();
    if (handed) {
      SetVmGeneration(s.generation);
      std::fprintf(stderr, "ferry standby: the primary handed the VM over; it runs here now (generation %llu)\n",
                   static_cast<unsigned long long>(s.generation));
    }
    std::lock_guard lock(mu_);
    if (handed) vm_ = std::move(handed);
    session_over_ = true;
    cv_.notify_all();
  });
  int code = kExitOk;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] {
      if (vm_ || stop_) return true;
      if (!session_over_) return false;
      // Over: wait for a promotion only if there is something to promote. "promoted" with no
      // VM yet: a forced promotion ended the session and is handing the VM over right now.
      auto s = standby_->status();
      return !((s.state == "primary-lost" && s.committed_epoch > 0) || s.state == "promoted");
    });
    if (!vm_ && !stop_) {
      auto s = standby_->status();
      code = s.state == "ended" ? kExitOk : kExitError;
    }
  }
  receiver.join();
  hypervisor::Vm* vm;
  {
    std::lock_guard lock(mu_);
    vm = vm_.get();
  }
  if (vm) code = AwaitVmExit(*vm);
  if (api) api->Stop();
  return code;
}

}  // namespace

int RunStandby(std::unique_ptr<replication::Standby> standby, const std::string& api_path) {
  StandbyHost host(std::move(standby));
  return host.Run(api_path);
}

}  // namespace ferry::cli
