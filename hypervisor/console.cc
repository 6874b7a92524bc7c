#include "console.h"

namespace ferry::hypervisor {

void Console::Write(std::string_view bytes) {
  std::lock_guard lock(mu_);
  state_.bytes_written += bytes.size();
  for (char c : bytes) {
    if (c == '\n' || state_.partial_line.size() >= kMaxLine) {
      last_line_ = state_.partial_line;
      ++state_.lines_written;
      if (sink_) sink_(state_.partial_line);
      state_.partial_line.clear();
      if (c == '\n') continue;
    }
    if (c != '\r') state_.partial_line.push_back(c);
  }
}

ConsoleState Console::Save() const {
  std::lock_guard lock(mu_);
  return state_;
}

void Console::Restore(const ConsoleState& state) {
  std::lock_guard lock(mu_);
  state_ = state;
}

std::string Console::LastLine() const {
  std::lock_guard lock(mu_);
  return last_line_;
}

}  // namespace ferry::hypervisor
