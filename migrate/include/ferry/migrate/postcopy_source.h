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

#include <cstdint>

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

struct PostcopySourceLinks {
  StreamSet* streams = nullptr;  // the data streams, still open after the switchover
  Channel* requests = nullptr;   // the page-request connection
  Channel* control = nullptr;
};

// `memory`: the paused VM's RAM (`pages` pages), unchanged since the switchover.
// `io_timeout_ms`: the destination silent this long after the last page was sent has failed.
PostcopySourceResult RunPostcopySource(const uint8_t* memory, uint64_t pages, const Bitmap& outstanding,
                                       const PostcopySourceLinks& links, uint64_t io_timeout_ms);

}  // namespace ferry::migrate
