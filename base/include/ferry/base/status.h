// Status and Result<T>: errors as values (STYLE.md rule 4).
//
// A Status is either ok or carries a code and a human-readable message meant for the operator
// ("snapshot: section 3 checksum mismatch"). Result<T> holds a T or a failed Status. Neither
// throws; both are cheap to move. Thread-compatible: distinct objects may be used from any
// thread.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace ferry {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // the caller or user passed something malformed
  kNotFound,
  kCorrupt,          // a file or stream failed validation (checksum, length, magic)
  kUnsupported,      // e.g. a format version or a kernel capability we do not have
  kIo,               // a system call failed
  kTimeout,
  kBusy,             // e.g. a socket already in use
  kAborted,
  kIndeterminate,    // an outcome is unknown (a commit whose answer was lost)
  kInternal,
  kRefused,          // the object's state does not allow it now (a VM that a migration holds)
  kDenied,           // a peer's identity or key was not accepted (TLS, certificates, plaintext rules)
};

// One name per code ("invalid_argument", "refused", ...) for JSON replies, and its parse
// (an unknown name parses as kInternal).
const char* ErrorCodeName(ErrorCode code);
ErrorCode ParseErrorCode(const std::string& name);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with context, keeping the code: "restore: " + "bad magic".
  Status Annotate(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status Corrupt(std::string m) { return {ErrorCode::kCorrupt, std::move(m)}; }
inline Status Unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
inline Status Internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }
inline Status NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status Timeout(std::string m) { return {ErrorCode::kTimeout, std::move(m)}; }
inline Status Busy(std::string m) { return {ErrorCode::kBusy, std::move(m)}; }
inline Status Refused(std::string m) { return {ErrorCode::kRefused, std::move(m)}; }
// An I/O error from errno: "what: strerror(errno)".
Status ErrnoError(const std::string& what, int err);
Status ErrnoError(const std::string& what);  // uses the current errno

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result built from an ok Status has no value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace ferry

// Returns early from the calling function when `expr` yields a failed Status.
#define FERRY_RETURN_IF_ERROR(expr)              \
  do {                                           \
    ::ferry::Status ferry_status_ = (expr);      \
    if (!ferry_status_.ok()) return ferry_status_; \
  } while (0)

#define FERRY_CONCAT_INNER(a, b) a##b
#define FERRY_CONCAT(a, b) FERRY_CONCAT_INNER(a, b)
// `FERRY_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the failed Status.
#define FERRY_ASSIGN_OR_RETURN(lhs, expr) \
  FERRY_ASSIGN_OR_RETURN_IMPL(FERRY_CONCAT(ferry_result_, __LINE__), lhs, expr)
#define FERRY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
