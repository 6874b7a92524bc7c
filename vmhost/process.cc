#include "ferry/vmhost/process.h"

#include <pthread.h>

#include <cstdio>
#include <thread>

#include "ferry/base/guard.h"
#include "ferry/base/log.h"
#include "ferry/vmhost/api_server.h"
#include "ferry/vmhost/vm_host.h"

namespace ferry::vmhost {

SignalWatcher::SignalWatcher(std::function<void()> on_signal) {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  thread_ = std::thread([this, on_signal = std::move(on_signal)] {
    int sig = 0;
    sigwait(&set_, &sig);
    if (done_) return;
    FERRY_LOG_WARN("signal %d", sig);
    on_signal();
  });
}

SignalWatcher::~SignalWatcher() {
  done_ = true;
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

namespace {

Result<std::unique_ptr<ApiServer>> Serve(VmHost& host, const std::string& api_path) {
  if (api_path.empty()) return std::unique_ptr<ApiServer>();
  return ApiServer::Start(api_path, [&host](const nlohmann::json& r, const ApiEmit& emit) { return host.Handle(r, emit); });
}

HostOutcome Finish(VmHost& host, bool verify_on_start) {
  auto exit = host.Run(verify_on_start);
  if (!exit.ok()) return {exit.status(), std::nullopt};
  return {Status::Ok(), *exit};
}

}  // namespace

HostOutcome RunVm(std::unique_ptr<hypervisor::Vm> vm, const RunOptions& options) {
  VmHost host(Phase::kBooting, options.api_path);
  SignalWatcher signals([&host] { host.Shutdown(); });  // before any other thread starts
  if (options.lease_ms) host.Lease(options.lease_ms);
  host.Attach(std::move(vm), options.generation, /*arrived=*/false);
  auto api = Serve(host, options.api_path);
  if (!api.ok()) return {api.status(), std::nullopt};
  return Finish(host, options.verify_on_start);
}

HostOutcome RunIncoming(const migrate::IncomingOptions& options, const std::string& api_path) {
  VmHost host(Phase::kIncoming, api_path);
  // Outlives the signal watcher and the API server, whose threads may be cancelling it.
  std::unique_ptr<migrate::Incoming> owner;
  SignalWatcher signals([&host] { host.Shutdown(); });
  // The API first: a destination that could not serve the VM must not accept it.
  auto api = Serve(host, api_path);
  if (!api.ok()) return {api.status(), std::nullopt};
  auto incoming = migrate::Incoming::Listen(options);
  if (!incoming.ok()) return {incoming.status(), std::nullopt};
  owner = std::move(incoming).value();
  migrate::Incoming* in = owner.get();
  host.SetCancel([in] { in->Cancel(); });
  std::fprintf(stderr, "ferry incoming: listening on %s%s\n", in->address().c_str(),
               (" (" + options.security.Describe() + ")").c_str());
  auto r = in->Receive();
  if (!r.ok() && host.phase() == Phase::kStopped) {
    // Nothing runs here: a destination stopped while waiting did not do its job (exit 1).
    return {Status(ErrorCode::kAborted, "incoming: stopped before a migration arrived"), std::nullopt};
  }
  if (!r.ok()) return {r.status().Annotate("incoming migration failed"), std::nullopt};
  const auto& s = r->stats;
  std::fprintf(stderr,
               "ferry incoming: VM received from %s: %llu pages, %.1f MB in %.0f ms; built in %.1f ms, running %.2f ms "
               "after commit%s\n",
               s.source.c_str(), static_cast<unsigned long long>(s.pages), s.wire_bytes / 1e6, s.receive_ms, s.build_ms,
               s.resume_ms, s.verified ? (s.verify_passed ? "; verification passed" : "; VERIFICATION FAILED") : "");
  if (s.postcopy) {
    std::fprintf(stderr, "ferry incoming: post-copy: %llu pages followed the VM, %llu faults (p50 %.0f us, p99 %.0f us), "
                 "%llu pages on demand, %llu in the background, %.0f ms\n",
                 static_cast<unsigned long long>(s.postcopy_outstanding), static_cast<unsigned long long>(s.postcopy_faults),
                 s.fault_p50_us, s.fault_p99_us, static_cast<unsigned long long>(s.postcopy_fetched_pages),
                 static_cast<unsigned long long>(s.postcopy_placed_pages), s.postcopy_ms);
  }
  if (s.postcopy_unresolved) {
    std::fprintf(stderr, "ferry incoming: the VM is held here, paused, its output and disk writes kept (why: above): "
                 "`ferry resume --force` runs it here (after checking the source), `ferry stop` drops it\n");
    host.AttachUnresolved(std::move(r->vm), s.generation);
    return Finish(host, false);
  }
  host.Attach(std::move(r->vm), s.generation, /*arrived=*/true);
  return Finish(host, false);
}

HostOutcome RunStandby(std::unique_ptr<replication::Standby> standby, const std::string& api_path, uint64_t lease_ms) {
  VmHost host(Phase::kStandby, api_path);
  replication::Standby* sb = standby.get();
  SignalWatcher signals([&host] { host.Shutdown(); });
  if (lease_ms) host.Lease(lease_ms);
  host.SetStandby(sb);
  host.SetCancel([sb] { sb->Cancel(); });
  auto api = Serve(host, api_path);
  if (!api.ok()) return {api.status(), std::nullopt};
  std::atomic<bool> session_over{false};
  std::thread receiver([&] {
    Status why = Guarded("the standby", [&] { return sb->Run(); });
    auto s = sb->status();
    if (s.state == replication::StandbyState::kPrimaryLost) {
      if (s.committed_epoch > 0) {
        std::fprintf(stderr, "ferry standby: primary lost (%s); the replica holds checkpoint %llu: `ferry promote` activates it\n",
                     why.message().c_str(), static_cast<unsigned long long>(s.committed_epoch));
      } else {
        std::fprintf(stderr, "ferry standby: primary lost before a whole checkpoint arrived (%s)\n", why.message().c_str());
      }
    } else if (s.state == replication::StandbyState::kEnded) {
      std::fprintf(stderr, "ferry standby: %s\n", why.message().c_str());
    }
    if (auto handed = sb->TakeHandedOver()) {
      std::fprintf(stderr, "ferry standby: the primary handed the VM over; it runs here now (generation %llu)\n",
                   static_cast<unsigned long long>(s.generation));
      host.Attach(std::move(handed), s.generation, /*arrived=*/true);
    }
    session_over = true;
  });
  bool have_vm = host.WaitForVm([&] {
    if (!session_over) return false;
    // Over: wait for a promotion only if there is something to promote. "promoted" with no
    // VM yet: a forced promotion ended the session and is handing the VM over right now.
    auto s = sb->status();
    return !((s.state == replication::StandbyState::kPrimaryLost && s.committed_epoch > 0) || s.state == replication::StandbyState::kPromoted);
  });
  receiver.join();
  // A handover that completed as the standby was being stopped: the VM is here, and it is the
  // only copy (its source has stopped for good). It runs (LIFECYCLE.md, stopped + arrived).
  if (!have_vm && host.vm()) have_vm = true;
  if (!have_vm) {
    auto s = sb->status();
    if (s.state == replication::StandbyState::kEnded || host.phase() == Phase::kStopped) return {Status::Ok(), std::nullopt};
    return {Status(ErrorCode::kAborted, std::string("the standby ended without a VM (") + replication::StandbyStateName(s.state) + (s.error.empty() ? "" : ": " + s.error) + ")"),
            std::nullopt};
  }
  return Finish(host, false);
}

}  // namespace ferry::vmhost
