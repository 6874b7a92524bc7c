// Reading JSON another process sent (an agent's report "stats" or status answer, a VMM's
// status answer): a missing object or field, a null or a value of the wrong type reads as the
// default rather than throwing. The balancer, the agents' metrics and load sampler, the
// console and the CLI's status printing all read such answers this way. (A const json's
// operator[] on a missing key is undefined behaviour; value() throws on a type it did not
// expect.)
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

inline std::string StringField(const nlohmann::json& j, const char* key, const std::string& dflt = "") {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : dflt;
}

inline bool BoolField(const nlohmann::json& j, const char* key, bool dflt = false) {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
}

// The field as it is (any type), or null.
inline nlohmann::json Field(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it != j.end() ? *it : nlohmann::json(nullptr);
}

// An array field, or an empty array.
inline nlohmann::json ArrayField(const nlohmann::json& j, const char* key) {
  nlohmann::json f = Field(j, key);
  return f.is_array() ? f : nlohmann::json::array();
}

}  // namespace ferry::ha
