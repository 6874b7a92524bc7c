// A migration/replication key as the CLI passes it to a VMM over its (owner-only) API socket:
// hex text in the request; and the connection fields the "migrate" and "replicate" requests
// share.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/migrate/auth.h"

namespace ferry::cli {

std::string KeyToHex(const std::vector<uint8_t>& bytes);
Result<migrate::Key> KeyFromHex(const std::string& hex);

// Fills `o`'s to, key, transport, streams and compress from an API request (`op` names it in
// errors); returns the error to answer with, if any. For MigrateOptions and ReplicateOptions.
template <class Options>
std::optional<std::string> ReadPeerFields(const nlohmann::json& req, const std::string& op, Options* o) {
  o->to = req.value("to", "");
  if (o->to.empty()) return op + " needs \"to\": HOST:PORT";
  if (req.contains("key") && req["key"].is_string()) {
    auto key = KeyFromHex(req["key"]);
    if (!key.ok()) return key.status().message();
    o->key = std::move(key).value();
  }
  o->transport = req.value("transport", "tcp");
  if (o->transport != "tcp" && o->transport != "rdma") return "transport must be tcp or rdma";
  o->streams = req.value("streams", 2u);
  o->compress = req.value("compress", "zstd") == "zstd";
  return std::nullopt;
}

}  // namespace ferry::cli
