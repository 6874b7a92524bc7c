#include "ferry/base/status.h"

#include <cerrno>
#include <cstring>

namespace ferry {

Status ErrnoError(const std::string& what, int err) {
  ErrorCode code = ErrorCode::kIo;
  if (err == ENOENT) code = ErrorCode::kNotFound;
  if (err == EADDRINUSE || err == EBUSY) code = ErrorCode::kBusy;
  if (err == EINVAL) code = ErrorCode::kInvalidArgument;
  return Status(code, what + ": " + std::strerror(err));
}

Status ErrnoError(const std::string& what) { return ErrnoError(what, errno); }

namespace {
constexpr struct {
  ErrorCode code;
  const char* name;
} kCodeNames[] = {
    {ErrorCode::kOk, "ok"},           {ErrorCode::kInvalidArgument, "invalid_argument"},
    {ErrorCode::kNotFound, "not_found"}, {ErrorCode::kCorrupt, "corrupt"},
    {ErrorCode::kUnsupported, "unsupported"}, {ErrorCode::kIo, "io"},
    {ErrorCode::kTimeout, "timeout"}, {ErrorCode::kBusy, "busy"},
    {ErrorCode::kAborted, "aborted"}, {ErrorCode::kIndeterminate, "indeterminate"},
    {ErrorCode::kInternal, "internal"}, {ErrorCode::kRefused, "refused"},
    {ErrorCode::kDenied, "denied"},
};
}  // namespace

const char* ErrorCodeName(ErrorCode code) {
  for (const auto& c : kCodeNames) {
    if (c.code == code) return c.name;
  }
  return "internal";
}

ErrorCode ParseErrorCode(const std::string& name) {
  for (const auto& c : kCodeNames) {
    if (name == c.name) return c.code;
  }
  return ErrorCode::kInternal;
}

}  // namespace ferry
