#include "e2e_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli_util.h"
#include "ferry/base/clock.h"

extern char** environ;

namespace ferry::e2e {

std::string FerryBin() { return FERRY_BUILD_DIR "/bin/ferry"; }
std::string GuestPath(const std::string& name) { return FERRY_BUILD_DIR "/guests/" + name + ".elf"; }
bool HaveKvm() { return ::access("/dev/kvm", R_OK | W_OK) == 0; }

TempDir::TempDir() {
  char tmpl[] = "/tmp/ferry-test-XXXXXX";
  char* p = mkdtemp(tmpl);
  path_ = p ? p : "/tmp";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
}

Process::Process(std::vector<std::string> argv, const std::string& log_prefix)
    : out_path_(log_prefix + ".out"), err_path_(log_prefix + ".err") {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  if (posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&fa);
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
}

int Process::Wait(int timeout_ms) {
  if (pid_ <= 0) return -1;
  if (!reaped_) {
    uint64_t deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status_, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        break;
      }
      if (MonotonicNs() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

static std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Process::Stdout() const { return ReadFile(out_path_); }
std::string Process::Stderr() const { return ReadFile(err_path_); }

CommandResult RunFerry(const std::vector<std::string>& args, const std::string& log_prefix, int timeout_ms) {
  std::vector<std::string> argv = {FerryBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, log_prefix, timeout_ms);
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& log_prefix, int timeout_ms) {
  Process p(argv, log_prefix);
  CommandResult r;
  r.code = p.Wait(timeout_ms);
  r.out = p.Stdout();
  r.err = p.Stderr();
  return r;
}

nlohmann::json LastJsonLine(const std::string& out) {
  size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return nlohmann::json::value_t::discarded;
  size_t start = out.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  return nlohmann::json::parse(out.substr(start, end + 1 - start), nullptr, false);
}

std::string WriteKey(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.File(name);
  std::ofstream(path) << text << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

bool WaitUntil(const std::function<bool()>& pred, int timeout_ms) {
  uint64_t deadline = MonotonicNs() + uint64_t(timeout_ms) * 1000000;
  while (MonotonicNs() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

Result<nlohmann::json> Api(const std::string& sock, const nlohmann::json& request, int timeout_ms) {
  return cli::CallApi(sock, request, timeout_ms);
}

Result<nlohmann::json> WaitForReport(const std::string& sock, const std::string& field, int timeout_ms) {
  nlohmann::json fields;
  Status last = Timeout("no report with " + field + " within " + std::to_string(timeout_ms) + " ms");
  bool ok = WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}}, 2000);
    if (!r.ok()) {
      last = r.status();
      return false;
    }
    fields = (*r)["report"]["fields"];
    return fields.contains(field);
  }, timeout_ms);
  if (!ok) return last;
  return fields;
}

}  // namespace ferry::e2e
