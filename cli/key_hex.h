// A migration/replication key as the CLI passes it to a VMM over its (owner-only) API socket:
// hex text in the request.
#pragma once

#include <string>
#include <vector>

#include "ferry/migrate/auth.h"

namespace ferry::cli {

std::string KeyToHex(const std::vector<uint8_t>& bytes);
Result<migrate::Key> KeyFromHex(const std::string& hex);

}  // namespace ferry::cli
