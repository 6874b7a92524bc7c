// FieldReader: reads the fields of one untrusted JSON request object into typed values,
// checking each one's type and range, without ever throwing. Absent optional fields keep the
// caller's default. The first problem is kept and reported by Finish(), which also refuses
// fields nobody asked for (a misspelt "timout_ms" must not be silently ignored). Records
// every field name it was asked for, so the API's docs can be checked against the decoders.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ferry/base/status.h"

namespace ferry::vmhost {

class FieldReader {
 public:
  FieldReader(const nlohmann::json& object, std::string op) : object_(object), op_(std::move(op)) {}

  void Bool(const char* name, bool* out);
  void U64(const char* name, uint64_t* out, uint64_t min, uint64_t max, bool required = false);
  void OptionalU64(const char* name, std::optional<uint64_t>* out, uint64_t min, uint64_t max);
  void I64(const char* name, int64_t* out, int64_t min, int64_t max, bool required = false);
  void Double(const char* name, double* out, double min, double max);
  void String(const char* name, std::string* out, size_t max_len, bool required = false);
  void Choice(const char* name, std::string* out, std::initializer_list<const char*> choices);
  // A rule across fields, checked by the caller: keeps the first error.
  void Fail(const std::string& message);
  bool ok() const { return error_.empty(); }

  Status Finish();
  const std::vector<std::string>& names() const { return names_; }

 private:
  const nlohmann::json* Find(const char* name, bool required);
  void Error(const char* name, const std::string& rule);

  const nlohmann::json& object_;
  std::string op_;
  std::vector<std::string> names_;
  std::string error_;
};

}  // namespace ferry::vmhost
