// Reading figures out of JSON another process sent (an agent's report "stats", a VMM's status
// answer): a missing object or field, a null or a value of the wrong type reads as the
// default rather than throwing. The balancer, the agents' metrics and load sampler, and the
// console all read those figures this way.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace ferry::ha {

inline double NumberField(const nlohmann::json& j, const char* key, double dflt = 0) {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : dflt;
}

inline std::string StringField(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace ferry::ha
