// Guarded: runs `fn` (returning Status) so that no exception leaves it: the body of a thread,
// or any step whose caller must go on (a migration's data stream, the replication loop). An
// exception becomes a kInternal Status naming `what` ("out of memory" for std::bad_alloc), so
// the operation fails as any error fails it: cleanly, the VM running on exactly one host,
// instead of std::terminate ending the VMM and its guest. A `fn` returning void (a thread's
// loop) counts as Ok when it returns.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "ferry/base/status.h"

namespace ferry {

template <class F>
Status Guarded(const char* what, F&& fn) noexcept {
  const char* why = "an unknown exception";
  std::string detail;
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
      std::forward<F>(fn)();
      return Status::Ok();
    } else {
      return std::forward<F>(fn)();
    }
  } catch (const std::bad_alloc&) {
    why = "out of memory";
  } catch (const std::exception& e) {
    why = nullptr;
    try {
      detail = e.what();
    } catch (...) {
      why = "out of memory";
    }
  } catch (...) {
  }
  try {
    return Internal(std::string(what) + ": " + (why ? why : detail.c_str()));
  } catch (...) {
    return Status(ErrorCode::kInternal, "no memory");  // short enough to need no allocation
  }
}

}  // namespace ferry
