// The console device: guest bytes in, complete lines out to a sink (the VMM's stdout by
// default). Thread-safe: several vCPUs may write at once; lines are delivered whole.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "ferry/hypervisor/device_state.h"

namespace ferry::hypervisor {

using ConsoleSink = std::function<void(std::string_view line)>;

class Console {
 public:
  explicit Console(ConsoleSink sink) : sink_(std::move(sink)) {}
  void Write(std::string_view bytes);
  ConsoleState Save() const;
  void Restore(const ConsoleState& state);
  std::string LastLine() const;

 private:
  static constexpr size_t kMaxLine = 4096;
  mutable std::mutex mu_;
  ConsoleSink sink_;         // called with mu_ held, so lines never interleave
  ConsoleState state_;       // guarded by mu_
  std::string last_line_;    // guarded by mu_
};

}  // namespace ferry::hypervisor
