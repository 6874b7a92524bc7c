#include "ferry/replication/states.h"

#include <array>

namespace ferry::replication {
namespace {

constexpr std::array<const char*, 7> kReplicationNames = {"connecting", "syncing",     "protected",
                                                          "failed",     "stopped",     "handed-over",
                                                          "handover-indeterminate"};
constexpr std::array<const char*, 7> kStandbyNames = {"waiting", "syncing",  "replicating", "primary-lost",
                                                      "ended",   "promoted", "cancelled"};

template <typename E, size_t N>
std::optional<E> Parse(const std::array<const char*, N>& names, std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i]) return static_cast<E>(i);
  }
  return std::nullopt;
}

}  // namespace

const char* ReplicationStateName(ReplicationState s) { return kReplicationNames.at(static_cast<size_t>(s)); }
std::optional<ReplicationState> ParseReplicationState(std::string_view name) {
  return Parse<ReplicationState>(kReplicationNames, name);
}
const char* StandbyStateName(StandbyState s) { return kStandbyNames.at(static_cast<size_t>(s)); }
std::optional<StandbyState> ParseStandbyState(std::string_view name) { return Parse<StandbyState>(kStandbyNames, name); }

}  // namespace ferry::replication
