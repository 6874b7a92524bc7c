// ApiClient: one request/response exchange with a VMM's JSON API on a unix socket.
// Blocking, with a deadline; each call opens its own connection. Thread-safe.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::vmhost {

// Sends `request` to the VMM at `socket_path` and returns its response. A response with
// "ok": false becomes an error carrying the VMM's message and its "code" (ErrorCodeName). Interim lines (objects with a
// "progress" member, sent by long operations) go to `on_progress` and restart the timeout,
// which then bounds silence rather than the whole call.
using ProgressLineFn = std::function<void(const nlohmann::json& line)>;
Result<nlohmann::json> CallApi(const std::string& socket_path, const nlohmann::json& request, int timeout_ms = 30000,
                               const ProgressLineFn& on_progress = {});

}  // namespace ferry::vmhost
