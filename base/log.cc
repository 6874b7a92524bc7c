#include "ferry/base/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>

#include "ferry/base/clock.h"

namespace ferry {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
const char* kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

void Log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  char buf[1024];
  int n = std::snprintf(buf, sizeof buf, "ferry[%d] %s: ", static_cast<int>(getpid()),
                        kNames[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof buf - 2) len = sizeof buf - 2;
  buf[len++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, buf, len);
  (void)ignored;
}

bool LogLimiter::Allow(uint64_t now_ms, uint64_t* suppressed) {
  std::lock_guard lock(mu_);
  if (last_ms_ && now_ms > last_ms_) {
    tokens_ = std::min<double>(burst_, tokens_ + static_cast<double>(now_ms - last_ms_) * per_second_ / 1000.0);
  }
  if (now_ms > last_ms_) last_ms_ = now_ms;
  if (tokens_ < 1) {
    ++dropped_;
    return false;
  }
  tokens_ -= 1;
  *suppressed = dropped_;
  dropped_ = 0;
  return true;
}

bool LogLimiter::Allow(uint64_t* suppressed) { return Allow(MonotonicMs(), suppressed); }

}  // namespace ferry
