#include "ferry/base/units.h"

#include <cctype>
#include <charconv>
#include <cstdio>

namespace ferry {

bool ParseU64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return false;
  *out = v;
  return true;
}

Result<uint64_t> ParseSize(std::string_view text) {
  const std::string shown(text);
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = text[i] - '0';
    if (value > (UINT64_MAX - digit) / 10) return InvalidArgument("size '" + shown + "' is too large");
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return InvalidArgument("size '" + shown + "' must start with a number (e.g. 256M)");
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (suffix.empty() || suffix == "B") shift = 0;
  else if (suffix == "K" || suffix == "KIB" || suffix == "KB") shift = 10;
  else if (suffix == "M" || suffix == "MIB" || suffix == "MB") shift = 20;
  else if (suffix == "G" || suffix == "GIB" || suffix == "GB") shift = 30;
  else if (suffix == "T" || suffix == "TIB" || suffix == "TB") shift = 40;
  else return InvalidArgument("size '" + shown + "' has an unknown suffix (use K, M, G or T)");
  if (shift && value > (UINT64_MAX >> shift)) return InvalidArgument("size '" + shown + "' is too large");
  return value << shift;
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || v == static_cast<uint64_t>(v)) {
    std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(v), kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace ferry
