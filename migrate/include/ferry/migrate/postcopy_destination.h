// The destination's side of post-copy (PROTOCOL.md, "Post-copy"), around the VM it runs:
//   Switch()  at the switchover, before the VM's state is loaded: drops the pages the source
//             names as outstanding (its newer copies follow) and registers guest RAM with
//             userfaultfd, so a first touch of an outstanding page fetches it on demand
//             through the page-request connection. Data streams then place pages through
//             memory() (PageSink::set_postcopy).
//   Finish()  once the VM runs, sealed against output: waits until every outstanding page is
//             here, ends the request stream, reports completion and waits for the source's
//             end (its promise never to run again). Only after Ok may the caller release the
//             guest's held output and disk writes.
// Errors of Finish(): the source failed or went silent before completion (the caller throws
// this copy away, releasing nothing: the source resumes), or kIndeterminate: completion was
// reported but the source's end did not come (it may have resumed or stopped: the caller
// keeps the VM paused and held and says so). Thread-safe where noted.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/migrate/channel.h"
#include "ferry/migrate/postcopy_channel.h"
#include "ferry/migrate/postcopy_memory.h"
#include "ferry/migrate/postcopy_protocol.h"

namespace ferry::migrate {

struct PostcopyDestinationOptions {
  uint32_t window_pages = 8;
  uint64_t io_timeout_ms = 20000;  // no page arriving for this long (while some are missing) is a failure
};

class PostcopyDestination {
 public:
  static Result<std::unique_ptr<PostcopyDestination>> Switch(hypervisor::GuestMemory& memory, const Bitmap& outstanding,
                                                             Channel& requests, const PostcopyDestinationOptions& options);
  ~PostcopyDestination();  // unregisters (blocked touchers then see zero pages: stop them first)

  PostcopyMemory& memory() { return *memory_; }  // thread-safe
  // `held` (may be empty) fills in what the caller held meanwhile (frames, disk bytes), for
  // the report; it runs once every page is here. Blocks.
  Result<PostcopyComplete> Finish(Channel& control, const std::function<void(PostcopyComplete*)>& held);
  // What Finish() reported to the source (zero until every page is here); kept when the
  // source's end did not come, too.
  const PostcopyComplete& report() const { return report_; }
  // Any thread: makes a Finish() in progress (or the next one) fail at once with `why`.
  void Abort(const Status& why);

 private:
  PostcopyDestination(Channel& requests, const PostcopyDestinationOptions& options)
      : requests_(requests), requester_(requests), options_(options) {}

  Channel& requests_;
  PageRequester requester_;
  PostcopyDestinationOptions options_;
  std::unique_ptr<PostcopyMemory> memory_;
  PostcopyComplete report_;  // Finish()'s thread only
  std::mutex mu_;
  std::condition_variable cv_;
  Status aborted_ = Status::Ok();  // guarded by mu_
};

}  // namespace ferry::migrate
