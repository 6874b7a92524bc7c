// Minimal leveled logging to stderr for the VMM and the CLI. Operator-facing results go to
// stdout or JSON; this is for diagnostics. Thread-safe (one write(2) per line).
#pragma once

#include <cstdint>
#include <mutex>

namespace ferry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
// printf-style; prefixes "ferry[pid] LEVEL: " and appends a newline.
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Bounds a message that someone outside the process can make it log at will (a guest that
// breaks a device queue, sets it up again and breaks it, at hypercall speed): at most `burst`
// at once, then `per_second`. Thread-safe.
class LogLimiter {
 public:
  LogLimiter(uint32_t per_second, uint32_t burst) : per_second_(per_second), burst_(burst), tokens_(burst) {}
  // Whether to log one now; if so, *suppressed is how many were dropped since the last one
  // logged (say so in it).
  bool Allow(uint64_t now_ms, uint64_t* suppressed);
  bool Allow(uint64_t* suppressed);  // now, on the monotonic clock

 private:
  const uint32_t per_second_, burst_;
  std::mutex mu_;
  double tokens_;        // guarded by mu_
  uint64_t last_ms_ = 0;  // guarded by mu_
  uint64_t dropped_ = 0;  // guarded by mu_
};

}  // namespace ferry

#define FERRY_LOG_DEBUG(...) ::ferry::Log(::ferry::LogLevel::kDebug, __VA_ARGS__)
#define FERRY_LOG_INFO(...) ::ferry::Log(::ferry::LogLevel::kInfo, __VA_ARGS__)
#define FERRY_LOG_WARN(...) ::ferry::Log(::ferry::LogLevel::kWarn, __VA_ARGS__)
#define FERRY_LOG_ERROR(...) ::ferry::Log(::ferry::LogLevel::kError, __VA_ARGS__)
