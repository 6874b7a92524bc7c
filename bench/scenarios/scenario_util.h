// Helpers shared by the in-process scenario drivers: order statistics, booting a guest from
// build/guests, and waiting for a field in its status report. A benchmark that cannot set up
// its VM exits with a message (there is nothing to measure).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ferry/hypervisor/vm.h"

namespace ferry::bench {

inline double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}
inline double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

// Boots and starts build/guests/<guest>.elf; ring_entries > 0 selects KVM dirty rings.
inline std::unique_ptr<hypervisor::Vm> BootGuest(const std::string& build, const std::string& guest, uint64_t mem,
                                                 uint32_t vcpus, const std::string& args, uint32_t ring_entries = 0) {
  hypervisor::VmConfig c{mem, vcpus, build + "/guests/" + guest + ".elf", args, ring_entries, {}};
  auto vm = hypervisor::Vm::Boot(c, [](std::string_view) {});
  if (!vm.ok()) {
    std::fprintf(stderr, "boot %s: %s\n", guest.c_str(), vm.status().message().c_str());
    std::exit(1);
  }
  if (!(*vm)->Start().ok()) std::exit(1);
  return std::move(vm).value();
}

// Waits until the guest's report has `field` (equal to `value` unless value is empty).
inline bool WaitForField(hypervisor::Vm& vm, const std::string& field, const std::string& value = "",
                         int timeout_ms = 30000) {
  for (int i = 0; i < timeout_ms; ++i) {
    auto fields = vm.LastReport().fields;
    auto it = fields.find(field);
    if (it != fields.end() && (value.empty() || it->second == value)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

}  // namespace ferry::bench
