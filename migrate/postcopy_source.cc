#include "ferry/migrate/postcopy_source.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <exception>
#include <thread>

#include "ferry/base/clock.h"

namespace ferry::migrate {
namespace {

double Ms(uint64_t ns) { return ns / 1e6; }

PostcopySourceResult Failed(Status why, const PostcopySourceLinks& l, PostcopySourceStats stats) {
  // Every connection says why and closes: the destination's fetches and receives fail at once
  // and it gives up without releasing anything.
  l.streams->FailAll(why.message());
  l.requests->Close();
  l.control->set_timeout_ms(1000);
  (void)l.control->Send(MsgType::kError, EncodeReason(why.message()));
  l.control->Close();
  return {PostcopyOutcome::kFailed, std::move(why), stats};
}

}  // namespace

PostcopyPageServer::PostcopyPageServer(Channel& requests, const uint8_t* memory, uint64_t pages, std::function<void()> on_error)
    : requests_(requests) {
  requests_.set_timeout_ms(0);
  thread_ = std::thread([this, memory, pages, on_error = std::move(on_error)] {
    Result<PageServerStats> r = PageServerStats{};
    try {
      r = ServePageRequests(requests_, memory, pages, stop_);
    } catch (const std::exception& e) {
      r = Internal(std::string("post-copy page server: ") + e.what());
    }
    const bool failed = !r.ok() && !stop_.load();
    {
      std::lock_guard lock(mu_);
      result_ = std::move(r);
      done_ = true;
    }
    cv_.notify_all();
    if (failed && on_error) on_error();
  });
}

Result<PageServerStats> PostcopyPageServer::Stop(uint64_t wait_ms) {
  if (!thread_.joinable()) {
    std::lock_guard lock(mu_);
    return result_;
  }
  {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return done_; });
  }
  stop_ = true;
  requests_.Close();
  thread_.join();
  std::lock_guard lock(mu_);
  return result_;
}

Status PostcopyPageServer::failure() const {
  std::lock_guard lock(mu_);
  return done_ && !result_.ok() ? result_.status() : Status::Ok();
}

PostcopySourceResult RunPostcopySource(const Bitmap& outstanding, const PostcopySourceLinks& l, uint64_t io_timeout_ms) {
  PostcopySourceStats stats;
  stats.outstanding_pages = outstanding.Count();
  const uint64_t t0 = MonotonicNs();
  auto finish = [&](PostcopySourceResult r) {
    // Completed: the destination ended the request stream before it reported completion, so
    // the server is reading that end now.
    auto served = l.server->Stop(r.outcome == PostcopyOutcome::kCompleted ? io_timeout_ms : 0);
    if (served.ok()) r.stats.served = *served;
    r.stats.duration_ms = Ms(MonotonicNs() - t0);
    return r;
  };

  l.streams->BeginPostcopy(outstanding);
  Status st = l.streams->SendRound(outstanding);
  if (st.ok()) st = l.streams->Finish().status();
  stats.background_ms = Ms(MonotonicNs() - t0);
  Frame f;
  if (st.ok()) {
    l.control->set_timeout_ms(io_timeout_ms);
    st = l.control->Expect(MsgType::kPostcopyComplete, &f);
  }
  Result<PostcopyComplete> complete = st.ok() ? DecodePostcopyComplete(f.payload) : Result<PostcopyComplete>(st);
  if (!complete.ok()) {
    Status why = complete.status();
    if (Status s = l.server->failure(); !s.ok() && s.code() != ErrorCode::kAborted) why = s;
    return finish(Failed(why.Annotate("post-copy failed before the destination held every page"), l, stats));
  }
  stats.destination = *complete;
  if (l.may_hand_off && !l.may_hand_off()) {
    return finish(Failed(Status(ErrorCode::kAborted, "the source was fenced during post-copy: the destination must "
                                                     "not run the VM"),
                         l, stats));
  }
  // From here on the source never runs this VM again, whether or not our end arrives.
  if (Status end = l.control->Send(MsgType::kPostcopyEnd); !end.ok()) {
    return finish({PostcopyOutcome::kIndeterminate,
                   Status(ErrorCode::kIndeterminate, "the destination holds every page but the source's end could not be sent (" +
                                                         end.message() + "); the destination keeps the VM held: check it"),
                   stats});
  }
  // The destination's word that it released the VM: without it the source cannot tell
  // whether the VM runs anywhere (the end may have been lost), so it does not claim success.
  // It writes the held disk writes first (and syncs them): give that time, at 50 MB/s or more.
  l.control->set_timeout_ms(io_timeout_ms + complete->held_disk_bytes / 50000);
  Status released = l.control->Expect(MsgType::kPostcopyReleased, &f);
  Result<std::string> held = released.ok() ? DecodeReason(f.payload) : Result<std::string>(released);
  if (!held.ok()) {
    return finish({PostcopyOutcome::kIndeterminate,
                   Status(ErrorCode::kIndeterminate, "the destination holds every page and was sent the source's end, but "
                                                     "did not confirm it released the VM (" + held.status().message() +
                                                     "): check it"),
                   stats});
  }
  if (!held->empty()) {
    return finish({PostcopyOutcome::kIndeterminate,
                   Status(ErrorCode::kIndeterminate, "the destination holds the VM paused and could not release it (" +
                                                     *held + "): see it"),
                   stats});
  }
  return finish({PostcopyOutcome::kCompleted, Status::Ok(), stats});
}

}  // namespace ferry::migrate
