#include "ferry/migrate/postcopy_memory.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

#include "ferry/base/clock.h"

namespace ferry::migrate {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kMaxSamples = 1 << 20;  // fault latencies kept for the percentiles

double Percentile(std::vector<uint32_t> v, double q) {
  if (v.empty()) return 0;
  const size_t at = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(at), v.end());
  return v[at];
}

}  // namespace

Status PostcopyMemory::Available() {
  UniqueFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!uffd.valid()) return ErrnoError("userfaultfd (post-copy needs it: vm.unprivileged_userfaultfd or CAP_SYS_PTRACE)", errno);
  return Status::Ok();
}

Result<std::unique_ptr<PostcopyMemory>> PostcopyMemory::Register(uint8_t* base, uint64_t bytes, PostcopyOptions options) {
  if (!base || bytes == 0 || reinterpret_cast<uintptr_t>(base) % kPage != 0 || bytes % kPage != 0) {
    return InvalidArgument("post-copy memory must be a non-empty range of whole 4 KiB pages");
  }
  if (!options.fetch) return InvalidArgument("post-copy memory needs a fetch function");
  if (options.window_pages == 0 || options.window_pages > 256) return InvalidArgument("post-copy window must be 1..256 pages");
  if (options.outstanding && options.outstanding->size() != bytes / kPage) {
    return InvalidArgument("post-copy: the outstanding pages do not describe this memory");
  }
  UniqueFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!uffd.valid()) return ErrnoError("userfaultfd (post-copy needs it: vm.unprivileged_userfaultfd or CAP_SYS_PTRACE)", errno);
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) return ErrnoError("userfaultfd: UFFDIO_API", errno);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uintptr_t>(base);
  reg.range.len = bytes;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) return ErrnoError("userfaultfd: registering guest memory", errno);
  if ((reg.ioctls & (1ull << _UFFDIO_COPY)) == 0) return Status(ErrorCode::kUnsupported, "userfaultfd: this memory cannot take UFFDIO_COPY");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoError("eventfd", errno);
  auto m = std::unique_ptr<PostcopyMemory>(new PostcopyMemory(base, bytes, std::move(uffd), std::move(wake), std::move(options)));
  m->thread_ = std::thread([p = m.get()] { p->Run(); });
  return m;
}

PostcopyMemory::PostcopyMemory(uint8_t* base, uint64_t bytes, UniqueFd uffd, UniqueFd wake, PostcopyOptions options)
    : base_(base), pages_(bytes / kPage), uffd_(std::move(uffd)), wake_(std::move(wake)), options_(std::move(options)),
      present_(new std::atomic<uint8_t>[bytes / kPage]), missing_(0) {
  const Bitmap* want = options_.outstanding;
  uint64_t missing = 0;
  for (uint64_t i = 0; i < pages_; ++i) {
    const bool fetch = !want || want->Test(i);
    present_[i].store(fetch ? 0 : 1, std::memory_order_relaxed);
    missing += fetch;
  }
  missing_.store(missing);
  options_.outstanding = nullptr;  // the caller's: not kept
}

PostcopyMemory::~PostcopyMemory() { Abandon(); }

void PostcopyMemory::Abandon() {
  if (abandoned_.exchange(true)) return;
  {
    std::lock_guard lock(mu_);
    if (!failed_) {
      failed_ = true;  // a fault read from now on is left for the unregistering to wake
      error_ = Status(ErrorCode::kAborted, "post-copy abandoned");
    }
  }
  complete_cv_.notify_all();
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  // Unregistering wakes every thread blocked on a fault in the range (the kernel retries the
  // fault without us: an empty page).
  uffdio_range range{reinterpret_cast<uintptr_t>(base_), pages_ * kPage};
  (void)::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
}

void PostcopyMemory::Run() {
  pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      Fail(ErrnoError("post-copy: poll", errno));
      return;
    }
    if (fds[1].revents) return;
    uffd_msg msgs[16];
    const ssize_t n = ::read(uffd_.get(), msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      Fail(ErrnoError("post-copy: reading userfaultfd", errno));
      return;
    }
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
        try {
          ServeFault(msgs[i].arg.pagefault.address);
        } catch (const std::exception& e) {  // e.g. out of memory: the migration fails, the thread does not
          Fail(Internal(std::string("post-copy: ") + e.what()));
        }
      }
    }
  }
}

void PostcopyMemory::ServeFault(uint64_t address) {
  {
    std::lock_guard lock(mu_);
    if (failed_) return;  // the toucher stays blocked: it must never see a page not the source's
  }
  const uint64_t t0 = MonotonicNs();
  const uint64_t page = (address - reinterpret_cast<uintptr_t>(base_)) / kPage;
  if (page >= pages_) return;
  if (present_[page].load(std::memory_order_acquire)) {
    // Not the source's to send: a hole it never wrote, filled with zeros here. Or placed after
    // the fault was queued (EEXIST): that copy woke the toucher already; wake to be sure.
    uffdio_zeropage zero{};
    zero.range = {reinterpret_cast<uintptr_t>(base_) + page * kPage, kPage};
    if (::ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &zero) == 0) {
      std::lock_guard lock(mu_);
      ++zero_filled_;
      return;
    }
    uffdio_range range{reinterpret_cast<uintptr_t>(base_) + page * kPage, kPage};
    (void)::ioctl(uffd_.get(), UFFDIO_WAKE, &range);
    return;
  }
  uint32_t count = 1;  // the faulting page and the missing ones right after it, up to the window
  while (count < options_.window_pages && page + count < pages_ && !present_[page + count].load(std::memory_order_relaxed)) ++count;
  std::vector<uint8_t> buf(count * kPage);
  Status st = options_.fetch(page, count, buf.data());
  if (st.ok()) st = Install(page, count, buf.data(), true, &t0);
  if (!st.ok() && missing_.load(std::memory_order_acquire) == 0) {
    // Every page arrived (from the background stream) while this fetch was on its way, and
    // the request stream may have ended meanwhile: the page is in place and its toucher woken.
    uffdio_range range{reinterpret_cast<uintptr_t>(base_) + page * kPage, kPage};
    (void)::ioctl(uffd_.get(), UFFDIO_WAKE, &range);
    return;
  }
  if (!st.ok()) Fail(st.Annotate("post-copy: fetching page " + std::to_string(page) + " from the source"));
}

Status PostcopyMemory::Install(uint64_t page, uint32_t count, const uint8_t* data, bool fetched, const uint64_t* fault_t0) {
  uint64_t installed = 0;
  for (uint32_t i = 0; i < count;) {
    if (present_[page + i].load(std::memory_order_acquire)) {
      ++i;
      continue;
    }
    uint32_t run = 1;  // a run of pages still missing, in one copy
    while (i + run < count && !present_[page + i + run].load(std::memory_order_relaxed)) ++run;
    uffdio_copy copy{};
    copy.dst = reinterpret_cast<uintptr_t>(base_) + (page + i) * kPage;
    copy.src = reinterpret_cast<uintptr_t>(data) + static_cast<uint64_t>(i) * kPage;
    copy.len = static_cast<uint64_t>(run) * kPage;
    const int rc = ::ioctl(uffd_.get(), UFFDIO_COPY, &copy);
    const uint64_t done = copy.copy > 0 ? static_cast<uint64_t>(copy.copy) / kPage : 0;
    for (uint64_t k = 0; k < done; ++k) {
      if (!present_[page + i + k].exchange(1, std::memory_order_acq_rel)) ++installed;
    }
    if (rc == 0) {
      i += run;
      continue;
    }
    if (errno == EEXIST) {
      // The other installer was first with the page after those copied: the page is in place.
      // Whoever flips its flag counts it, so every page is counted once.
      if (!present_[page + i + done].exchange(1, std::memory_order_acq_rel)) ++installed;
      i += static_cast<uint32_t>(done) + 1;
      continue;
    }
    if (errno == EAGAIN) {  // the address space was changing: try the rest again
      i += static_cast<uint32_t>(done);
      continue;
    }
    return ErrnoError("post-copy: installing page " + std::to_string(page + i + done), errno);
  }
  // Under mu_, with the counts: WaitComplete (which reads missing under mu_) cannot see the
  // last page in before the fault that brought it is counted.
  std::lock_guard lock(mu_);
  const uint64_t left = installed ? missing_.fetch_sub(installed, std::memory_order_acq_rel) - installed : missing();
  (fetched ? fetched_ : placed_) += installed;
  // A fault is counted before completion is announced: whoever waits for it reads every figure.
  if (fault_t0) {
    ++faults_;
    if (fault_us_.size() < kMaxSamples) {
      fault_us_.push_back(static_cast<uint32_t>(std::min<uint64_t>((MonotonicNs() - *fault_t0) / 1000, UINT32_MAX)));
    }
  }
  if (installed && left == 0) complete_cv_.notify_all();
  return Status::Ok();
}

Status PostcopyMemory::Place(uint64_t page, const uint8_t* data) {
  if (page >= pages_) return InvalidArgument("post-copy: page " + std::to_string(page) + " is beyond guest memory");
  if (abandoned_.load(std::memory_order_acquire)) return Status(ErrorCode::kAborted, "post-copy abandoned");
  if (present_[page].load(std::memory_order_acquire)) return Status::Ok();
  return Install(page, 1, data, false);
}

bool PostcopyMemory::Present(uint64_t page) const { return page < pages_ && present_[page].load(std::memory_order_acquire); }

bool PostcopyMemory::WaitComplete(uint64_t timeout_ms) {
  std::unique_lock lock(mu_);
  return complete_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return failed_ || missing() == 0; }) && !failed_;
}

void PostcopyMemory::Fail(const Status& st) {
  {
    std::lock_guard lock(mu_);
    if (failed_) return;
    failed_ = true;
    error_ = st;
  }
  complete_cv_.notify_all();
  std::fprintf(stderr, "ferry: %s\n", st.message().c_str());
  if (options_.on_failure) options_.on_failure(st);
}

Status PostcopyMemory::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

PostcopyStats PostcopyMemory::stats() const {
  std::vector<uint32_t> samples;
  PostcopyStats s;
  {
    std::lock_guard lock(mu_);
    samples = fault_us_;
    s.faults = faults_;
    s.fetched_pages = fetched_;
    s.placed_pages = placed_;
    s.zero_filled = zero_filled_;
  }
  s.missing_pages = missing();
  s.fault_p50_us = Percentile(samples, 0.5);
  s.fault_p99_us = Percentile(samples, 0.99);
  s.fault_max_us = samples.empty() ? 0 : *std::max_element(samples.begin(), samples.end());
  return s;
}

}  // namespace ferry::migrate
