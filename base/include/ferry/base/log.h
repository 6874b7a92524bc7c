// Minimal leveled logging to stderr for the VMM and the CLI. Operator-facing results go to
// stdout or JSON; this is for diagnostics. Thread-safe (one write(2) per line).
#pragma once

namespace ferry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
// printf-style; prefixes "ferry[pid] LEVEL: " and appends a newline.
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace ferry

#define FERRY_LOG_DEBUG(...) ::ferry::Log(::ferry::LogLevel::kDebug, __VA_ARGS__)
#define FERRY_LOG_INFO(...) ::ferry::Log(::ferry::LogLevel::kInfo, __VA_ARGS__)
#define FERRY_LOG_WARN(...) ::ferry::Log(::ferry::LogLevel::kWarn, __VA_ARGS__)
#define FERRY_LOG_ERROR(...) ::ferry::Log(::ferry::LogLevel::kError, __VA_ARGS__)
