#include "cli_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ferry::cli {

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "ferry: %s\n", message.c_str());
  return code;
}

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case ErrorCode::kOk: return kExitOk;
    case ErrorCode::kInvalidArgument: return kExitUsage;
    case ErrorCode::kIndeterminate: return kExitIndeterminate;
    case ErrorCode::kRefused:
    case ErrorCode::kBusy: return kExitRefused;
    default: return kExitError;
  }
}

int Fail(const Status& status) { return Fail(status.message(), ExitCodeFor(status)); }

int ExitCodeFor(const vmhost::HostOutcome& outcome) {
  if (!outcome.error.ok()) return Fail(outcome.error.message(), kExitError);
  if (!outcome.exit) return kExitOk;
  const hypervisor::VmExit& exit = *outcome.exit;
  switch (exit.state) {
    case hypervisor::RunState::kShutdown:
      std::fprintf(stderr, "ferry: guest shut down (code %d)\n", exit.exit_code);
      return exit.exit_code < 0 || exit.exit_code > 125 ? kExitError : exit.exit_code;
    case hypervisor::RunState::kCrashed:
      std::fprintf(stderr, "ferry: guest crashed: %s\n", exit.reason.c_str());
      return kExitGuestCrash;
    default:
      std::fprintf(stderr, "ferry: VM stopped\n");
      return kExitOk;
  }
}

hypervisor::ConsoleSink StdoutConsole() {
  return [](std::string_view line) {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  };
}

const CLI::Validator kFinite(
    [](std::string& value) -> std::string {
      char* end = nullptr;
      double d = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !std::isfinite(d)) return "expected a finite number, got '" + value + "'";
      return "";
    },
    "FINITE");

}  // namespace ferry::cli
