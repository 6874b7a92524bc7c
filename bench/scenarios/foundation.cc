// bench/foundation: the foundation's numbers, measured side by side in one run.
//   boot:      `ferry run hello.elf --mem 256M` from spawn to its first console line
//   pause:     pause/resume latency of a 2-vCPU guest dirtying memory
//   snapshot:  snapshot write and restore read of a 256 MiB memcheck guest, against a plain
//              memcpy of the same guest RAM measured in the same run
// Prints one JSON object per line; medians over repeated runs.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/clock.h"
#include "ferry/hypervisor/snapshot.h"
#include "ferry/hypervisor/vm.h"
#include "scenario_util.h"

extern char** environ;

namespace {

using ferry::MonotonicNs;
using ferry::bench::BootGuest;
using ferry::bench::Median;
using ferry::bench::Percentile;
using ferry::bench::WaitForField;
using nlohmann::json;
namespace hv = ferry::hypervisor;


// Spawn to first stdout line of `ferry run hello.elf`, in ms.
double BootOnce(const std::string& build, const std::string& mem) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::string bin = build + "/bin/ferry", guest = build + "/guests/hello.elf";
  std::vector<char*> argv = {bin.data(), const_cast<char*>("run"), guest.data(), const_cast<char*>("--mem"),
                             const_cast<char*>(mem.c_str()), nullptr};
  pid_t pid;
  uint64_t t0 = MonotonicNs();
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) return -1;
  char c;
  double ms = -1;
  while (read(fds[0], &c, 1) == 1) {
    if (c == '\n') {
      ms = (MonotonicNs() - t0) / 1e6;
      break;
    }
  }
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  return ms;
}



void BenchBoot(const std::string& build, int runs) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) ms.push_back(BootOnce(build, "256M"));
  std::printf("%s\n", json{{"bench", "boot_to_first_line"}, {"mem_mib", 256}, {"runs", runs}, {"median_ms", Median(ms)},
                           {"p90_ms", Percentile(ms, 0.9)}, {"max_ms", Percentile(ms, 1.0)}}
                          .dump()
                          .c_str());
}

void BenchPause(const std::string& build, int runs) {
  auto vm = BootGuest(build, "dirtier", 256ull << 20, 2, "rate_mbps=200 wss_mib=128");
  WaitForField(*vm, "pages");
  std::vector<double> pause_us, resume_us;
  for (int i = 0; i < runs; ++i) {
    auto p = vm->Pause();
    if (!p.ok()) std::exit(1);
    pause_us.push_back(p->latency_ns / 1e3);
    uint64_t t0 = MonotonicNs();
    if (!vm->Resume().ok()) std::exit(1);
    resume_us.push_back((MonotonicNs() - t0) / 1e3);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::printf("%s\n", json{{"bench", "pause_resume"}, {"guest", "dirtier 200 MB/s, 2 vCPUs"}, {"runs", runs},
                           {"pause_median_us", Median(pause_us)}, {"pause_p99_us", Percentile(pause_us, 0.99)},
                           {"pause_max_us", Percentile(pause_us, 1.0)}, {"resume_median_us", Median(resume_us)}}
                          .dump()
                          .c_str());
  vm->Stop();
  vm->WaitForExit();
}

void BenchSnapshot(const std::string& build, const std::string& dir, int runs, uint64_t mem) {
  auto vm = BootGuest(build, "memcheck", mem, 2, "");
  WaitForField(*vm, "verify_seq");  // initial fill done: every page holds data
  if (!vm->Pause().ok()) std::exit(1);
  auto state = vm->SaveState();
  if (!state.ok()) std::exit(1);
  const hv::GuestMemory& ram = vm->memory();
  const double gib = ram.size() / double(1u << 30);

  // memcpy of the same RAM into a buffer that is already faulted in.
  auto* dst = static_cast<uint8_t*>(mmap(nullptr, ram.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::memset(dst, 1, ram.size());
  std::vector<double> memcpy_s, cold_s, write_shm_s, write_disk_s, fsync_disk_s, read_s;
  for (int i = 0; i < runs; ++i) {
    uint64_t t0 = MonotonicNs();
    std::memcpy(dst, ram.host(), ram.size());
    memcpy_s.push_back((MonotonicNs() - t0) / 1e9);
  }
  munmap(dst, ram.size());
  std::string shm = "/dev/shm/ferry-bench-" + std::to_string(getpid()) + ".snap";
  std::string disk = dir + "/ferry-bench-" + std::to_string(getpid()) + ".snap";
  auto write = [&](const std::string& path, bool fsync) {
    auto st = hv::WriteSnapshot(path, *state, ram, hv::SnapshotOptions{fsync});
    if (!st.ok()) {
      std::fprintf(stderr, "snapshot: %s\n", st.status().message().c_str());
      std::exit(1);
    }
    return st->elapsed_ns / 1e9;
  };
  // The kernel's ceiling: a plain single-threaded pwrite of the same RAM into a new file.
  auto raw_write = [&](const std::string& path) {
    unlink(path.c_str());
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    uint64_t t0 = MonotonicNs();
    for (uint64_t off = 0; off < ram.size();) {
      ssize_t n = pwrite(fd, ram.host() + off, std::min<uint64_t>(4u << 20, ram.size() - off), off);
      if (n <= 0) std::exit(1);
      off += n;
    }
    double s = (MonotonicNs() - t0) / 1e9;
    close(fd);
    unlink(path.c_str());
    return s;
  };
  std::vector<double> raw_shm_s, raw_disk_s;
  for (int i = 0; i < runs; ++i) {
    raw_shm_s.push_back(raw_write(shm));
    raw_disk_s.push_back(raw_write(disk));
  }
  for (int i = 0; i < runs; ++i) {
    unlink(shm.c_str());
    write_shm_s.push_back(write(shm, false));
  }
  for (int i = 0; i < runs; ++i) {
    auto r = hv::ReadSnapshot(shm);
    if (!r.ok()) std::exit(1);
    read_s.push_back(r->stats.elapsed_ns / 1e9);
  }
  for (int i = 0; i < runs; ++i) {
    unlink(disk.c_str());
    write_disk_s.push_back(write(disk, false));
  }
  for (int i = 0; i < std::max(1, runs / 2); ++i) {
    unlink(disk.c_str());
    fsync_disk_s.push_back(write(disk, true));
  }
  unlink(shm.c_str());
  unlink(disk.c_str());
  double memcpy_gibs = gib / Median(memcpy_s);
  auto row = [&](const char* what, const std::vector<double>& s, const std::vector<double>* ceiling) {
    double gibs = gib / Median(s);
    json j = {{"bench", what},      {"mem_mib", ram.size() >> 20},      {"runs", s.size()},
              {"median_ms", Median(s) * 1e3}, {"gib_per_s", gibs}, {"memcpy_gib_per_s", memcpy_gibs},
              {"ratio_to_memcpy", gibs / memcpy_gibs}};
    if (ceiling) j["ratio_to_raw_write"] = gibs / (gib / Median(*ceiling));
    std::printf("%s\n", j.dump().c_str());
  };
  row("memcpy_guest_ram", memcpy_s, nullptr);
  row("raw_pwrite_tmpfs", raw_shm_s, nullptr);
  row("raw_pwrite_disk", raw_disk_s, nullptr);
  row("snapshot_write_tmpfs", write_shm_s, &raw_shm_s);
  row("snapshot_read_tmpfs", read_s, nullptr);
  row("snapshot_write_disk_nofsync", write_disk_s, &raw_disk_s);
  row("snapshot_write_disk_fsync", fsync_disk_s, &raw_disk_s);
  vm->Stop();
  vm->WaitForExit();
}

}  // namespace

int main(int argc, char** argv) {
  std::string build = argc > 1 ? argv[1] : "build";
  std::string dir = argc > 2 ? argv[2] : "/var/tmp";
  int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  BenchBoot(build, 4 * runs);
  BenchPause(build, 40 * runs);
  BenchSnapshot(build, dir, runs, 256ull << 20);
  return 0;
}
