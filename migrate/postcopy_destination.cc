#include "ferry/migrate/postcopy_destination.h"

#include <chrono>

#include "ferry/base/clock.h"

namespace ferry::migrate {

Result<std::unique_ptr<PostcopyDestination>> PostcopyDestination::Switch(hypervisor::GuestMemory& memory,
                                                                         const Bitmap& outstanding, Channel& requests,
                                                                         const PostcopyDestinationOptions& options) {
  const uint64_t pages = memory.size() / kPageBytes;
  if (outstanding.size() != pages) return InvalidArgument("post-copy: the outstanding pages do not describe guest memory");
  // Drop what the source changed after sending it, run by run: those pages must fault.
  for (uint64_t p = 0; p < pages;) {
    if (!outstanding.Test(p)) {
      ++p;
      continue;
    }
    uint64_t end = p + 1;
    while (end < pages && outstanding.Test(end)) ++end;
    FERRY_RETURN_IF_ERROR(memory.Discard(p * kPageBytes, (end - p) * kPageBytes));
    p = end;
  }
  auto d = std::unique_ptr<PostcopyDestination>(new PostcopyDestination(requests, options));
  PostcopyOptions o;
  o.window_pages = options.window_pages;
  o.outstanding = &outstanding;
  PostcopyDestination* self = d.get();
  o.fetch = [self](uint64_t first, uint32_t count, uint8_t* out) { return self->requester_.Fetch(first, count, out); };
  o.on_failure = [self](const Status& why) { self->Abort(why); };
  FERRY_ASSIGN_OR_RETURN(d->memory_, PostcopyMemory::Register(memory.host(), memory.size(), std::move(o)));
  return d;
}

PostcopyDestination::~PostcopyDestination() { memory_.reset(); }

void PostcopyDestination::Abort(const Status& why) {
  {
    std::lock_guard lock(mu_);
    if (aborted_.ok()) aborted_ = why;
  }
  cv_.notify_all();
}

Result<PostcopyComplete> PostcopyDestination::Finish(Channel& control, const std::function<void(PostcopyComplete*)>& held) {
  // Every page, or a failure, or silence: no page installed for a whole timeout while some
  // are missing means the source or the link is gone.
  uint64_t last_missing = memory_->missing(), last_change = MonotonicNs();
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return !aborted_.ok(); });
      if (!aborted_.ok()) return aborted_;
    }
    if (Status e = memory_->error(); !e.ok()) return e;
    const uint64_t missing = memory_->missing();
    if (missing == 0) break;
    if (missing != last_missing) {
      last_missing = missing;
      last_change = MonotonicNs();
    } else if ((MonotonicNs() - last_change) / 1000000 > options_.io_timeout_ms) {
      return Timeout("post-copy: no page arrived for " + std::to_string(options_.io_timeout_ms) + " ms with " +
                     std::to_string(missing) + " still missing");
    }
  }
  FERRY_RETURN_IF_ERROR(requester_.End().Annotate("post-copy: ending the page-request stream"));
  const PostcopyStats s = memory_->stats();
  PostcopyComplete& c = report_;
  c.faults = s.faults;
  c.fetched_pages = s.fetched_pages;
  c.placed_pages = s.placed_pages;
  c.fault_p50_us = static_cast<uint32_t>(s.fault_p50_us);
  c.fault_p99_us = static_cast<uint32_t>(s.fault_p99_us);
  c.fault_max_us = static_cast<uint32_t>(s.fault_max_us);
  if (held) held(&c);
  FERRY_RETURN_IF_ERROR(control.Send(MsgType::kPostcopyComplete, EncodePostcopyComplete(c)).Annotate("post-copy: reporting completion"));
  Frame f;
  control.set_timeout_ms(options_.io_timeout_ms);
  Status st = control.Receive(&f);
  if (st.ok() && IsGiveUp(f)) {
    // The source says it gives up: it only does so instead of its end (it resumes, or it was
    // fenced), so this copy must not run.
    return Status(ErrorCode::kAborted, "post-copy: the source gave up after completion: " + GiveUpReason(f));
  }
  if (st.ok() && f.type != static_cast<uint16_t>(MsgType::kPostcopyEnd)) {
    st = Corrupt(std::string("expected postcopy-end, got ") + MsgTypeName(f.type));
  }
  if (!st.ok()) {
    return Status(ErrorCode::kIndeterminate, "every page arrived and completion was reported, but the source's end did not come (" +
                                                 st.message() + "): the source may have resumed; the VM stays held here");
  }
  return c;
}

}  // namespace ferry::migrate
