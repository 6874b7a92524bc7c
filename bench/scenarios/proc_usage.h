// What a process holds, read from /proc: resident and virtual size, threads (from
// /proc/PID/status), memory mappings (lines of /proc/PID/maps) and open descriptors (entries
// of /proc/PID/fd). Soak drivers sample a VMM with it and fit a least-squares line through the
// samples to tell a leak (steady growth) from noise. Plain functions; any thread may call them.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ferry::bench {

struct ProcUsage {
  double rss_kib = 0;
  double vsz_kib = 0;
  double maps = 0;
  double threads = 0;
  double fds = 0;
};

// False if the process is gone (or was never ours to read).
inline bool ReadProcUsage(pid_t pid, ProcUsage* out) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream status(dir + "/status");
  if (!status) return false;
  ProcUsage u;
  bool saw_rss = false;
  for (std::string line; std::getline(status, line);) {
    auto field = [&](const char* name, double* v) {
      size_t n = std::char_traits<char>::length(name);
      if (line.compare(0, n, name) != 0) return false;
      *v = std::stod(line.substr(n));  // "VmRSS:\t  1234 kB": stod skips the blanks, stops at " kB"
      return true;
    };
    if (field("VmRSS:", &u.rss_kib)) {
      saw_rss = true;
    } else if (!field("VmSize:", &u.vsz_kib)) {
      field("Threads:", &u.threads);
    }
  }
  if (!saw_rss) return false;  // a zombie (a VMM that died, not yet reaped) has no memory lines
  std::ifstream maps(dir + "/maps");
  for (std::string line; std::getline(maps, line);) ++u.maps;
  std::error_code ec;
  std::filesystem::directory_iterator fds(dir + "/fd", ec), fds_end;
  for (; !ec && fds != fds_end; fds.increment(ec)) ++u.fds;
  if (ec) return false;
  *out = u;
  return true;
}

// The least-squares slope of y over x (0 with fewer than two distinct x).
inline double Slope(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() < 2 || x.size() != y.size()) return 0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= x.size();
  my /= y.size();
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : 0;
}

}  // namespace ferry::bench
