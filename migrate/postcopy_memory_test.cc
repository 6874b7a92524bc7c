// Post-copy's destination memory on real userfaultfd, with plain anonymous memory standing in
// for guest RAM and a function standing in for the source: every page a thread touches holds
// the source's bytes; a fault fetches a window; background placement racing with faults
// installs each page once; a failed fetch is reported once and never lets a toucher see a
// page that is not the source's.
#include "ferry/migrate/postcopy_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

namespace ferry::migrate {
namespace {

constexpr uint64_t kPage = 4096;

// Anonymous memory nobody has touched yet.
struct Region {
  explicit Region(uint64_t pages) : bytes(pages * kPage) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Region() {
    if (base) ::munmap(base, bytes);
  }
  uint64_t bytes;
  uint8_t* base = nullptr;
};

// The source's page `p`: its number in every 8-byte word, so a wrong or zero page shows.
void SourcePage(uint64_t p, uint8_t* out) {
  for (uint64_t w = 0; w < kPage / 8; ++w) {
    const uint64_t v = (p + 1) * 0x9e3779b97f4a7c15ull ^ w;
    std::memcpy(out + w * 8, &v, 8);
  }
}

bool PageIsTheSources(const uint8_t* at, uint64_t p) {
  uint8_t want[kPage];
  SourcePage(p, want);
  return std::memcmp(at, want, kPage) == 0;
}

PostcopyOptions FromSource(std::atomic<uint64_t>* fetches = nullptr, uint32_t window = 8) {
  PostcopyOptions o;
  o.window_pages = window;
  o.fetch = [fetches](uint64_t first, uint32_t count, uint8_t* out) {
    if (fetches) fetches->fetch_add(1);
    for (uint32_t i = 0; i < count; ++i) SourcePage(first + i, out + i * kPage);
    return Status::Ok();
  };
  return o;
}

TEST(PostcopyMemory, TouchedPagesHoldTheSourcesBytesAndAFaultFetchesAWindow) {
  Region r(512);
  ASSERT_NE(r.base, nullptr);
  std::atomic<uint64_t> fetches{0};
  auto m = PostcopyMemory::Register(r.base, r.bytes, FromSource(&fetches, 8));
  ASSERT_TRUE(m.ok()) << m.status().message();
  // One touch brings its page and the 7 after it.
  EXPECT_TRUE(PageIsTheSources(r.base + 16 * kPage, 16));
  // The toucher resumes the moment its page lands; the fault thread books it just after.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((*m)->stats().fetched_pages < 8 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  auto s = (*m)->stats();
  EXPECT_EQ(s.faults, 1u);
  EXPECT_EQ(s.fetched_pages, 8u);
  for (uint64_t p = 16; p < 24; ++p) EXPECT_TRUE((*m)->Present(p)) << p;
  EXPECT_FALSE((*m)->Present(24));
  // Two threads touch every page in opposite orders; all of it is the source's.
  std::atomic<uint64_t> wrong{0};
  std::thread up([&] {
    for (uint64_t p = 0; p < 512; ++p) wrong += !PageIsTheSources(r.base + p * kPage, p);
  });
  std::thread down([&] {
    for (uint64_t p = 512; p-- > 0;) wrong += !PageIsTheSources(r.base + p * kPage, p);
  });
  up.join();
  down.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_TRUE((*m)->WaitComplete(1000));
  s = (*m)->stats();
  EXPECT_EQ(s.missing_pages, 0u);
  EXPECT_EQ(s.fetched_pages, 512u);
  EXPECT_GT(s.fault_p50_us, 0);
  std::printf("faults %llu, p50 %.0f us, p99 %.0f us\n", static_cast<unsigned long long>(s.faults), s.fault_p50_us, s.fault_p99_us);
}

TEST(PostcopyMemory, AnAscendingScanFaultsOncePerWindow) {
  Region r(512);
  ASSERT_NE(r.base, nullptr);
  auto m = PostcopyMemory::Register(r.base, r.bytes, FromSource(nullptr, 8));
  ASSERT_TRUE(m.ok()) << m.status().message();
  uint64_t wrong = 0;
  for (uint64_t p = 0; p < 512; ++p) wrong += !PageIsTheSources(r.base + p * kPage, p);
  EXPECT_EQ(wrong, 0u);
  ASSERT_TRUE((*m)->WaitComplete(5000));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((*m)->stats().faults < 64 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_EQ((*m)->stats().faults, 64u);
  EXPECT_EQ((*m)->stats().fetched_pages, 512u);
}

TEST(PostcopyMemory, BackgroundPlacementRacingWithFaultsInstallsEveryPageOnce) {
  constexpr uint64_t kPages = 4096;  // 16 MiB
  Region r(kPages);
  ASSERT_NE(r.base, nullptr);
  auto m = PostcopyMemory::Register(r.base, r.bytes, FromSource(nullptr, 4));
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::thread stream([&] {  // the background stream, in order
    uint8_t page[kPage];
    for (uint64_t p = 0; p < kPages; ++p) {
      SourcePage(p, page);
      ASSERT_TRUE((*m)->Place(p, page).ok());
    }
  });
  std::atomic<uint64_t> wrong{0};
  std::thread vcpu([&] {  // touches at random, mostly ahead of the stream
    std::mt19937_64 rng(7);
    for (int i = 0; i < 3000; ++i) {
      const uint64_t p = rng() % kPages;
      wrong += !PageIsTheSources(r.base + p * kPage, p);
    }
  });
  stream.join();
  vcpu.join();
  ASSERT_TRUE((*m)->WaitComplete(5000));
  EXPECT_EQ(wrong.load(), 0u);
  auto s = (*m)->stats();
  EXPECT_EQ(s.fetched_pages + s.placed_pages, kPages) << s.fetched_pages << " + " << s.placed_pages;
  EXPECT_GT(s.placed_pages, 0u);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_TRUE(PageIsTheSources(r.base + p * kPage, p)) << p;
  // A page placed again (a duplicate from the stream) changes nothing.
  uint8_t junk[kPage] = {};
  EXPECT_TRUE((*m)->Place(5, junk).ok());
  EXPECT_TRUE(PageIsTheSources(r.base + 5 * kPage, 5));
  EXPECT_FALSE((*m)->Place(kPages, junk).ok());
}

TEST(PostcopyMemory, AFailedFetchIsReportedOnceAndTheToucherNeverSeesAForeignPage) {
  Region r(64);
  ASSERT_NE(r.base, nullptr);
  std::atomic<int> failures{0};
  PostcopyOptions o;
  o.window_pages = 1;
  o.fetch = [](uint64_t first, uint32_t count, uint8_t* out) -> Status {
    if (first == 40) return Status(ErrorCode::kIo, "the source is gone");
    for (uint32_t i = 0; i < count; ++i) SourcePage(first + i, out + i * kPage);
    return Status::Ok();
  };
  o.on_failure = [&](const Status&) { ++failures; };
  auto m = PostcopyMemory::Register(r.base, r.bytes, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE(PageIsTheSources(r.base, 0));
  std::atomic<bool> returned{false};
  std::atomic<uint64_t> seen{0};
  std::thread toucher([&] {
    uint64_t v = 0;
    std::memcpy(&v, r.base + 40 * kPage, 8);  // blocks: page 40 cannot come
    seen = v;
    returned = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (failures.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(failures.load(), 1);
  EXPECT_NE((*m)->error().message().find("the source is gone"), std::string::npos) << (*m)->error().message();
  EXPECT_FALSE((*m)->WaitComplete(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(returned.load()) << "a toucher ran on with a page the source never sent";
  // Another page's fault after the failure is not served either (the VM is being stopped).
  EXPECT_FALSE((*m)->Present(41));
  // Tearing down (the VM stopped) releases the toucher; it sees a zero page, never garbage.
  m->reset();
  toucher.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(seen.load(), 0u);
  EXPECT_EQ(failures.load(), 1);
}

// The destination giving up (DestMigration::DiscardPostcopy): a device thread blocked on a
// missing page inside its own lock (the NIC reading a ring) must let go before the discard
// takes that lock, while the memory stays valid for stream threads still placing pages.
TEST(PostcopyMemory, AbandonWakesAToucherBlockedInsideALockAndRefusesLaterPlacements) {
  Region r(64);
  ASSERT_NE(r.base, nullptr);
  PostcopyOptions o;
  o.window_pages = 1;
  o.fetch = [](uint64_t first, uint32_t count, uint8_t* out) -> Status {
    if (first == 30) return Status(ErrorCode::kIo, "the source is gone");
    for (uint32_t i = 0; i < count; ++i) SourcePage(first + i, out + i * kPage);
    return Status::Ok();
  };
  auto m = PostcopyMemory::Register(r.base, r.bytes, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::mutex device;
  std::atomic<bool> in_lock{false}, returned{false};
  std::thread nic([&] {
    std::lock_guard lock(device);
    in_lock = true;
    uint64_t v = 0;
    std::memcpy(&v, r.base + 30 * kPage, 8);  // blocks: page 30 cannot come
    returned = v == 0;
  });
  while (!in_lock.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(returned.load());
  (*m)->Abandon();
  std::atomic<bool> discarded{false};
  std::thread discard([&] {
    std::lock_guard lock(device);  // DiscardOutput
    discarded = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!discarded.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(discarded.load()) << "the discard waited forever on a lock held by a blocked toucher";
  if (!discarded.load()) (*m).reset();  // let the threads end so the test can report
  nic.join();
  discard.join();
  EXPECT_TRUE(returned.load()) << "the toucher must see an empty page, never another";
  if (*m) {
    uint8_t page[kPage];
    SourcePage(50, page);
    Status placed = (*m)->Place(50, page);
    EXPECT_FALSE(placed.ok()) << "placing after abandon";
    (*m)->Abandon();  // twice: harmless
  }
}

TEST(PostcopyMemory, RegisterRefusesWhatItCannotServe) {
  Region r(4);
  EXPECT_FALSE(PostcopyMemory::Register(r.base + 1, kPage, FromSource()).ok());
  EXPECT_FALSE(PostcopyMemory::Register(r.base, 100, FromSource()).ok());
  EXPECT_FALSE(PostcopyMemory::Register(r.base, r.bytes, PostcopyOptions{}).ok());
  EXPECT_FALSE(PostcopyMemory::Register(r.base, r.bytes, FromSource(nullptr, 0)).ok());
}

}  // namespace
}  // namespace ferry::migrate
