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

PostcopySourceResult RunPostcopySource(const uint8_t* memory, uint64_t pages, const Bitmap& outstanding,
                                       const PostcopySourceLinks& l, uint64_t io_timeout_ms) {
  PostcopySourceStats stats;
  stats.outstanding_pages = outstanding.Count();
  const uint64_t t0 = MonotonicNs();
  // The page server: requests come whenever a vCPU touches a page not yet there, so its
  // connection has no idle timeout; the destination ends it (stream-end) once complete.
  std::atomic<bool> stop{false};
  Result<PageServerStats> served = PageServerStats{};
  std::mutex mu;
  std::condition_variable cv;
  bool server_done = false;  // guarded by mu
  l.requests->set_timeout_ms(0);
  std::thread server([&] {
    try {
      served = ServePageRequests(*l.requests, memory, pages, stop);
    } catch (const std::exception& e) {
      served = Internal(std::string("post-copy page server: ") + e.what());
    }
    // A server that failed leaves the destination unable to finish: wake the control wait.
    if (!served.ok() && served.status().code() != ErrorCode::kAborted) l.control->Close();
    std::lock_guard lock(mu);
    server_done = true;
    cv.notify_all();
  });
  auto finish = [&](PostcopySourceResult r) {
    if (r.outcome == PostcopyOutcome::kCompleted) {
      // The destination ended the request stream before it reported completion: the server
      // is reading that end now.
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(io_timeout_ms), [&] { return server_done; });
    }
    stop = true;
    l.requests->Close();
    server.join();
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
    if (!served.ok() && served.status().code() != ErrorCode::kAborted) why = served.status();
    return finish(Failed(why.Annotate("post-copy failed before the destination held every page"), l, stats));
  }
  stats.destination = *complete;
  // From here on the source never runs this VM again, whether or not our end arrives.
  if (Status end = l.control->Send(MsgType::kPostcopyEnd); !end.ok()) {
    return finish({PostcopyOutcome::kIndeterminate,
                   Status(ErrorCode::kIndeterminate, "the destination holds every page but the source's end could not be sent (" +
                                                         end.message() + "); the destination keeps the VM held: check it"),
                   stats});
  }
  return finish({PostcopyOutcome::kCompleted, Status::Ok(), stats});
}

}  // namespace ferry::migrate
