// The source's side of post-copy (PROTOCOL.md, "Post-copy"), once the destination runs the
// VM: sends every outstanding page in the background over the data streams (whole: zero,
// zstd or raw), answers the destination's page requests on their own connection at once,
// and waits for the destination's report that every page has arrived. Only that report
// makes the source give the VM up: it answers postcopy-end, its promise never to run again,
// after which the destination releases the guest's held output and disk writes.
//
// Outcomes (PostcopySourceResult):
//   kCompleted      the destination holds every page and got our end: stop the VM here.
//   kFailed         the destination failed, died or went silent before reporting completion.
//                   It never released anything (its output and disk writes are held until
//                   our end), so the source, paused since the switchover, resumes: exactly
//                   one copy made its output visible.
//   kIndeterminate  completion arrived but our end could not be sent: the destination may or
//                   may not release. Stay paused (never two copies); the operator decides.
// Not thread-safe: one call to Run().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/migrate/channel.h"
#include "ferry/migrate/postcopy_channel.h"
#include "ferry/migrate/postcopy_protocol.h"
#include "ferry/migrate/stream_set.h"

namespace ferry::migrate {

enum class PostcopyOutcome : uint8_t { kCompleted, kFailed, kIndeterminate };

struct PostcopySourceStats {
  double duration_ms = 0;        // the destination started to it reported completion
  double background_ms = 0;      // sending every outstanding page in the background
  uint64_t outstanding_pages = 0;
  PageServerStats served;        // page requests answered on demand
  PostcopyComplete destination;  // what the destination reported
};

struct PostcopySourceResult {
  PostcopyOutcome outcome = PostcopyOutcome::kFailed;
  Status why;  // kFailed / kIndeterminate: the cause
  PostcopySourceStats stats;
};

// Answers the destination's page requests from the paused VM's RAM on a thread of its own,
// from the switchover on (the destination may touch pages while it loads the state). The
// request connection has no idle timeout: a vCPU may touch a missing page at any moment.
class PostcopyPageServer {
 public:
  // `on_error`: the server failed (a malformed request, the link): runs once, on its thread.
  PostcopyPageServer(Channel& requests, const uint8_t* memory, uint64_t pages, std::function<void()> on_error);
  ~PostcopyPageServer() { (void)Stop(0); }
  // Waits up to wait_ms for the destination's end of the stream, then closes it and joins:
  // what it served, or why it failed. Once.
  Result<PageServerStats> Stop(uint64_t wait_ms);
  // Its failure, if it failed already (Ok while serving).
  Status failure() const;

 private:
  Channel& requests_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;                               // guarded by mu_
  Result<PageServerStats> result_ = PageServerStats{};  // guarded by mu_ until done_
  std::thread thread_;
};

struct PostcopySourceLinks {
  StreamSet* streams = nullptr;  // the data streams, still open after the switchover
  Channel* requests = nullptr;   // the page-request connection
  Channel* control = nullptr;
  PostcopyPageServer* server = nullptr;  // started at the switchover
  // Asked once every page is at the destination, before the source's end lets it release
  // the VM: false (the source was fenced meanwhile) fails the post-copy instead, so the
  // destination discards its copy and the fenced source stays as it is. Empty: always true.
  std::function<bool()> may_hand_off;
};

// Runs once the destination started the VM; the VM's RAM (the server's) is unchanged since
// the switchover. `io_timeout_ms`: the destination silent this long after the last page
// was sent has failed. Stops links.server.
PostcopySourceResult RunPostcopySource(const Bitmap& outstanding, const PostcopySourceLinks& links, uint64_t io_timeout_ms);

}  // namespace ferry::migrate
