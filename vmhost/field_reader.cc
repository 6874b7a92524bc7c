#include "field_reader.h"

#include <algorithm>
#include <cmath>

namespace ferry::vmhost {

using nlohmann::json;

const json* FieldReader::Find(const char* name, bool required) {
  names_.emplace_back(name);
  if (!object_.is_object()) return nullptr;
  auto it = object_.find(name);
  if (it == object_.end()) {
    if (required) Error(name, "is required");
    return nullptr;
  }
  return &*it;
}

void FieldReader::Error(const char* name, const std::string& rule) {
  if (error_.empty()) error_ = op_ + ": \"" + name + "\" " + rule;
}

void FieldReader::Fail(const std::string& message) {
  if (error_.empty()) error_ = op_ + ": " + message;
}

void FieldReader::Bool(const char* name, bool* out) {
  const json* v = Find(name, false);
  if (!v) return;
  if (!v->is_boolean()) return Error(name, "must be true or false");
  *out = v->get<bool>();
}

void FieldReader::U64(const char* name, uint64_t* out, uint64_t min, uint64_t max, bool required) {
  const json* v = Find(name, required);
  if (!v) return;
  std::string range = "must be a whole number in " + std::to_string(min) + ".." + std::to_string(max);
  uint64_t x = 0;
  if (v->is_number_unsigned()) {
    x = v->get<uint64_t>();
  } else if (v->is_number_integer()) {
    int64_t i = v->get<int64_t>();
    if (i < 0) return Error(name, range);
    x = static_cast<uint64_t>(i);
  } else if (v->is_number_float()) {
    // 25.0 is a whole number too (some JSON writers print every number as a float).
    double d = v->get<double>();
    if (!std::isfinite(d) || d < 0 || d != std::floor(d) || d >= 18446744073709551616.0) return Error(name, range);
    x = static_cast<uint64_t>(d);
  } else {
    return Error(name, range);  // not a number
  }
  if (x < min || x > max) return Error(name, range);
  *out = x;
}

void FieldReader::OptionalU64(const char* name, std::optional<uint64_t>* out, uint64_t min, uint64_t max) {
  uint64_t x = 0;
  bool present = object_.is_object() && object_.contains(name);
  U64(name, &x, min, max);
  if (present && ok()) *out = x;
}

void FieldReader::I64(const char* name, int64_t* out, int64_t min, int64_t max, bool required) {
  const json* v = Find(name, required);
  if (!v) return;
  std::string range = "must be a whole number in " + std::to_string(min) + ".." + std::to_string(max);
  if (v->is_number_unsigned()) {
    uint64_t x = v->get<uint64_t>();
    if (x > static_cast<uint64_t>(max)) return Error(name, range);
    if (static_cast<int64_t>(x) < min) return Error(name, range);
    *out = static_cast<int64_t>(x);
    return;
  }
  if (!v->is_number_integer()) return Error(name, range);
  int64_t x = v->get<int64_t>();
  if (x < min || x > max) return Error(name, range);
  *out = x;
}

void FieldReader::Double(const char* name, double* out, double min, double max) {
  const json* v = Find(name, false);
  if (!v) return;
  std::string range = "must be a finite number in " + json(min).dump() + ".." + json(max).dump();
  if (!v->is_number()) return Error(name, range);
  double x = v->get<double>();
  if (!std::isfinite(x) || x < min || x > max) return Error(name, range);
  *out = x;
}

void FieldReader::String(const char* name, std::string* out, size_t max_len, bool required) {
  const json* v = Find(name, required);
  if (!v) return;
  if (!v->is_string()) return Error(name, "must be a string");
  const std::string& s = v->get_ref<const std::string&>();
  if (s.size() > max_len) return Error(name, "is longer than " + std::to_string(max_len) + " bytes");
  if (s.find('\0') != std::string::npos) return Error(name, "holds a NUL byte");
  *out = s;
}

void FieldReader::Choice(const char* name, std::string* out, std::initializer_list<const char*> choices) {
  std::string v = *out;
  String(name, &v, 64);
  if (!ok()) return;
  for (const char* c : choices) {
    if (v == c) {
      *out = v;
      return;
    }
  }
  std::string list;
  for (const char* c : choices) list += std::string(list.empty() ? "" : " or ") + c;
  Error(name, "must be " + list);
}

Status FieldReader::Finish() {
  if (!object_.is_object()) return InvalidArgument("the request is not a JSON object");
  if (error_.empty()) {
    for (const auto& [key, value] : object_.items()) {
      if (key == "op") continue;
      if (std::find(names_.begin(), names_.end(), key) == names_.end()) {
        error_ = op_ + ": unknown field \"" + key.substr(0, 64) + "\"";
        break;
      }
    }
  }
  if (error_.empty()) return Status::Ok();
  return InvalidArgument(error_);
}

}  // namespace ferry::vmhost
