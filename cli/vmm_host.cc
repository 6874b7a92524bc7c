#include "vmm_host.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"

namespace ferry::cli {

using hypervisor::RunState;

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "ferry: %s\n", message.c_str());
  return code;
}

hypervisor::ConsoleSink StdoutConsole() {
  return [](std::string_view line) {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  };
}

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

int RunVmm(std::unique_ptr<hypervisor::Vm> vm, const VmmOptions& options) {
  // Before any thread starts, so all inherit the mask.
  SignalWatcher signals([&vm] {
    FERRY_LOG_WARN("stopping the VM");
    vm->Stop();
  });
  std::unique_ptr<ApiServer> api;
  if (!options.api_path.empty()) {
    auto server = ApiServer::Start(options.api_path, [&vm](const nlohmann::json& r, const ApiEmit& emit) { return HandleApiRequest(*vm, r, emit); });
    if (!server.ok()) {
      std::fprintf(stderr, "ferry: %s\n", server.status().message().c_str());
      return kExitError;
    }
    api = std::move(server).value();
  }
  if (options.verify_on_start) vm->RequestVerify();
  if (Status st = options.already_started ? Status::Ok() : vm->Start(); !st.ok()) {
    std::fprintf(stderr, "ferry: cannot start the VM: %s\n", st.message().c_str());
    return kExitError;
  }
  int code = AwaitVmExit(*vm);
  if (api) api->Stop();
  return code;
}

int AwaitVmExit(hypervisor::Vm& vm) {
  hypervisor::VmExit exit = vm.WaitForExit();
  StopReplication();
  switch (exit.state) {
    case RunState::kShutdown:
      std::fprintf(stderr, "ferry: guest shut down (code %d)\n", exit.exit_code);
      return exit.exit_code < 0 || exit.exit_code > 125 ? kExitError : exit.exit_code;
    case RunState::kCrashed:
      std::fprintf(stderr, "ferry: guest crashed: %s\n", exit.reason.c_str());
      return kExitGuestCrash;
    default:
      std::fprintf(stderr, "ferry: VM stopped\n");
      return kExitOk;
  }
}

}  // namespace ferry::cli
