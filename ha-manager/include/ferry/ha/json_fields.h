// Reading figures out of JSON another process sent (an agent's report "stats", a VMM's status
// answer): a missing object or field, a null or a value of the wrong type reads as the
// default rather than throwing. The balancer, the agents' metrics and load sampler, and the
// console all read those figures this way.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ferry::ha {

inline double NumberField(const nlohmann::json& j, const char* key, double dflt = 0) {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : dflt;
}

// A count or a size: a whole number from 0 up to 2^64-1 (exact), or a fraction in that range
// (cut to its whole part); anything else is `dflt`. Casting a negative, too large or
// non-finite double to an integer is undefined behaviour.
inline uint64_t CountField(const nlohmann::json& j, const char* key, uint64_t dflt = 0) {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  if (it == j.end()) return dflt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (!it->is_number_float()) return dflt;  // a negative integer, or not a number
  const double v = it->get<double>();
  return v >= 0 && v < 18446744073709551616.0 ? static_cast<uint64_t>(v) : dflt;
}

inline std::string StringField(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace ferry::ha
