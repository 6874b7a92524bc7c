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

}  // namespace ferry
