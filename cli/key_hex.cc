#include "key_hex.h"

#include <cstdio>

namespace ferry::cli {

std::string KeyToHex(const std::vector<uint8_t>& bytes) {
  std::string out;
  char b[3];
  for (uint8_t v : bytes) {
    std::snprintf(b, sizeof b, "%02x", v);
    out += b;
  }
  return out;
}

Result<migrate::Key> KeyFromHex(const std::string& hex) {
  if (hex.size() % 2 != 0 || hex.size() > 8192) return InvalidArgument("malformed key");
  migrate::Key key;
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned v = 0;
    if (std::sscanf(hex.c_str() + i, "%2x", &v) != 1) return InvalidArgument("malformed key");
    key.bytes.push_back(static_cast<uint8_t>(v));
  }
  return key;
}

}  // namespace ferry::cli
