// The destination's side of post-copy (issue 20): guest RAM whose pages have not arrived yet
// is registered with userfaultfd, so the first touch of such a page (by a vCPU, or the VMM)
// blocks in the kernel while a fault thread here fetches it, with a window of its neighbours,
// from the source and installs it atomically (UFFDIO_COPY); the toucher resumes as soon as its
// page lands. The background stream places the other pages as they arrive (Place); a page
// fetched on demand and also streamed is installed once, by whichever came first: both are
// the source's state at switchover, which never changes after it.
//
// A fetch that fails (source dead, link cut) is final: error() says why, on_failure runs once,
// and faulting threads stay blocked (they must never see a page that is not the source's):
// the caller stops the VM (it is sealed and its output held until every page is here, so no
// client saw this copy run) and the source resumes. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ferry/base/bitmap.h"
#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::migrate {

struct PostcopyOptions {
  uint32_t window_pages = 8;  // fetched with each faulting page (those of them still missing)
  // Asks the source for pages [first, first + count) (4 KiB each), into `out`. Runs on the
  // fault thread; its latency is what a faulting vCPU waits.
  std::function<Status(uint64_t first, uint32_t count, uint8_t* out)> fetch;
  std::function<void(const Status&)> on_failure;  // the first failed fetch, once
  // The pages to fetch from the source (null: every page). A page outside it is either in
  // memory already (never faults) or a hole the source never wrote: its first touch gets a
  // zero page here, without a round trip.
  const Bitmap* outstanding = nullptr;
};

struct PostcopyStats {
  uint64_t faults = 0;          // first touches served on demand
  uint64_t fetched_pages = 0;   // installed by the fault thread (faulting pages and windows)
  uint64_t placed_pages = 0;    // installed from the background stream
  uint64_t missing_pages = 0;   // still to arrive
  uint64_t zero_filled = 0;     // holes touched, filled with zeros here
  double fault_p50_us = 0, fault_p99_us = 0, fault_max_us = 0;  // fault read to page installed
};

class PostcopyMemory {
 public:
  // Registers [base, base + bytes) (page-aligned; anonymous private memory or a shared memfd
  // mapping, whose outstanding pages must all be holes) and starts the fault thread.
  static Result<std::unique_ptr<PostcopyMemory>> Register(uint8_t* base, uint64_t bytes, PostcopyOptions options);
  // Whether this process may use userfaultfd at all (vm.unprivileged_userfaultfd, or
  // CAP_SYS_PTRACE): asked when a migration that may switch to post-copy begins, so a host
  // that cannot is refused before any RAM is sent rather than at the switchover.
  static Status Available();
  ~PostcopyMemory();  // Abandon()s if it was not (blocked touchers then see zero pages: stop them first)

  // Gives up for good (this copy of the VM is being thrown away; call from neither the fault
  // thread nor a fetch): faults are no longer served, the range is unregistered, and every
  // toucher blocked on a missing page wakes to find it empty, so a device thread blocked
  // inside its lock lets go (what it then does must not leave the host: output and disk writes
  // are held until the end of post-copy). Place() refuses from now on. The object stays
  // valid until destroyed, for threads still inside Place().
  void Abandon();
  // Installs a page that arrived in the background; Ok if it was already there.
  Status Place(uint64_t page, const uint8_t* data);
  bool Present(uint64_t page) const;
  uint64_t missing() const { return missing_.load(std::memory_order_relaxed); }
  // Waits until no page is missing (true), or timeout / a failure (false).
  bool WaitComplete(uint64_t timeout_ms);
  Status error() const;
  PostcopyStats stats() const;

 private:
  PostcopyMemory(uint8_t* base, uint64_t bytes, UniqueFd uffd, UniqueFd wake, PostcopyOptions options);
  void Run();
  void ServeFault(uint64_t address);
  // Installs `count` pages from `data` at `page`, page by page where some are present already.
  // `fault_t0`: a fault's fetch (counted, with its latency from then).
  Status Install(uint64_t page, uint32_t count, const uint8_t* data, bool fetched, const uint64_t* fault_t0 = nullptr);
  void Fail(const Status& st);

  uint8_t* const base_;
  const uint64_t pages_;
  UniqueFd uffd_, wake_;  // wake_: an eventfd that ends Run()
  PostcopyOptions options_;
  std::unique_ptr<std::atomic<uint8_t>[]> present_;
  std::atomic<uint64_t> missing_;
  mutable std::mutex mu_;
  std::condition_variable complete_cv_;
  Status error_ = Status::Ok();
  bool failed_ = false;
  std::atomic<bool> abandoned_{false};
  uint64_t faults_ = 0, fetched_ = 0, placed_ = 0, zero_filled_ = 0;
  std::vector<uint32_t> fault_us_;  // latencies, capped in count
  std::thread thread_;
};

}  // namespace ferry::migrate
