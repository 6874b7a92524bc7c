// Post-copy's on-demand page path over one protocol connection (PROTOCOL.md "Post-copy"):
// the destination's fault thread asks for the page it faulted on and a window after it
// (page-request), the source answers at once with the raw pages (page-reply), ahead of the
// background stream, which goes on other connections. One request in flight at a time: the
// fault thread waits for its page anyway.
#pragma once

#include <atomic>
#include <mutex>
#include <cstdint>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/migrate/channel.h"

namespace ferry::migrate {

struct PageRequest {
  uint64_t id = 0;
  uint64_t first = 0;
  uint32_t count = 0;  // 1..kMaxPagesPerBatch
};
std::vector<uint8_t> EncodePageRequest(const PageRequest& r);
Result<PageRequest> DecodePageRequest(std::span<const uint8_t> payload);
// The page-reply answering `r`: its id, range, then r.count pages from `pages`.
std::vector<uint8_t> EncodePageReply(const PageRequest& r, const uint8_t* pages);

// Destination side: PostcopyOptions::fetch. A reply that is not the one asked for (another
// id, range or size), an error frame or silence beyond the channel's timeout is an error.
// Thread-safe: a fetch and the end are serialized.
class PageRequester {
 public:
  explicit PageRequester(Channel& channel) : channel_(channel) {}
  Status Fetch(uint64_t first, uint32_t count, uint8_t* out);
  // Every page has arrived: ends the stream (stream-end), after any fetch in flight.
  Status End();

 private:
  Channel& channel_;
  std::mutex mu_;
  uint64_t next_id_ = 1;  // guarded by mu_
  bool ended_ = false;    // guarded by mu_
  Frame frame_;           // guarded by mu_
};

struct PageServerStats {
  uint64_t requests = 0, pages = 0;
};

// Source side: answers page requests from `memory` (the stopped VM's RAM, `pages` of them)
// until the destination ends the stream (stream-end: every page has arrived), `stop` is set
// (checked between frames), or an error: a request beyond memory or malformed is refused
// with an error frame.
Result<PageServerStats> ServePageRequests(Channel& channel, const uint8_t* memory, uint64_t pages,
                                          const std::atomic<bool>& stop);

}  // namespace ferry::migrate
