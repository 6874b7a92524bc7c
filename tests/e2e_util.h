// Helpers for Ferry's end-to-end tests: child processes owned by the test (killed and reaped
// on every exit path, by PID), per-test scratch directories, and polling with deadlines.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::e2e {

std::string FerryBin();                       // build/bin/ferry
std::string GuestPath(const std::string& name);  // build/guests/<name>.elf
bool HaveKvm();

// A scratch directory removed (with its contents) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A child process with stdout and stderr captured to files. The destructor sends SIGKILL if
// it still runs and always reaps it.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log_prefix);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Waits up to timeout_ms; returns the exit code (128+signal if killed), or -1 on timeout.
  int Wait(int timeout_ms);
  void Signal(int sig);
  std::string Stdout() const;
  std::string Stderr() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string out_path_, err_path_;
};

// Runs ferry with `args` to completion (bounded); returns its exit code and output.
struct CommandResult {
  int code = -1;
  std::string out, err;
};
CommandResult RunFerry(const std::vector<std::string>& args, const std::string& log_prefix, int timeout_ms = 60000);
// Runs any command line (argv[0] searched in PATH) the same way.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& log_prefix, int timeout_ms = 60000);

// The last line of a command's output parsed as JSON (a discarded value if it is not JSON):
// how tests read `--json` results.
nlohmann::json LastJsonLine(const std::string& out);
// A key file for `--key` with owner-only permissions; returns its path.
std::string WriteKey(const TempDir& dir, const std::string& name, const std::string& text);

// Polls `pred` every 10 ms until true or timeout.
bool WaitUntil(const std::function<bool()>& pred, int timeout_ms);

// One API call; fails the caller's expectations with the error message if it fails.
Result<nlohmann::json> Api(const std::string& sock, const nlohmann::json& request, int timeout_ms = 30000);
// Waits until the VM's guest report has `field`; returns the report fields.
Result<nlohmann::json> WaitForReport(const std::string& sock, const std::string& field, int timeout_ms);

}  // namespace ferry::e2e
