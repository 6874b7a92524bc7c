// The API's operations for the HA agent (ha-manager/): the VM's generation (fencing token),
// fencing (the guest stops: no output leaves), and releasing output that replication held
// back after its standby was lost.
#include <atomic>
#include <cstdio>

#include "ferry/base/clock.h"
#include "vmm_host.h"

namespace ferry::cli {

using nlohmann::json;

namespace {
std::atomic<uint64_t> g_generation{0};
std::atomic<bool> g_fenced{false};
std::atomic<uint64_t> g_fenced_at_ms{0};
}  // namespace

uint64_t VmGeneration() { return g_generation.load(); }
void SetVmGeneration(uint64_t generation) { g_generation = generation; }

json HaJson() {
  return {{"generation", g_generation.load()}, {"fenced", g_fenced.load()}, {"fenced_at_ms", g_fenced_at_ms.load()}};
}

json HandleHaRequest(hypervisor::Vm& vm, const std::string& op, const json& req) {
  auto error = [](const std::string& m) { return json{{"ok", false}, {"error", m}}; };
  if (op == "fence") {
    // The vCPUs stop, so nothing new is sent; what replication holds stays held (the agent
    // asked for hold-on-failure), so nothing of an unacknowledged epoch leaves either.
    if (!g_fenced.exchange(true)) g_fenced_at_ms = RealtimeMs();
    if (vm.state() == hypervisor::RunState::kRunning) {
      if (auto r = vm.Pause(); !r.ok()) return error("fence: " + r.status().message());
    }
    std::fprintf(stderr, "ferry: fenced (generation %llu): the guest is paused and sends nothing\n",
                 static_cast<unsigned long long>(g_generation.load()));
    return {{"ok", true}, {"ha", HaJson()}};
  }
  if (op == "unfence") {
    if (!g_fenced.exchange(false)) return {{"ok", true}, {"ha", HaJson()}};
    if (vm.state() == hypervisor::RunState::kPaused) {
      if (Status st = vm.Resume(); !st.ok()) return error("unfence: " + st.message());
    }
    return {{"ok", true}, {"ha", HaJson()}};
  }
  if (op == "release_output") {
    if (Replicating()) return error("replication is running: its acknowledgements release the output");
    vm.StopOutputBuffering();
    return {{"ok", true}};
  }
  if (op == "set_generation") {
    uint64_t g = req.value("generation", uint64_t{0});
    if (g < g_generation.load()) return error("the generation may only grow (it is " + std::to_string(g_generation.load()) + ")");
    g_generation = g;
    return {{"ok", true}, {"ha", HaJson()}};
  }
  return error("unknown HA op " + op);
}

}  // namespace ferry::cli
