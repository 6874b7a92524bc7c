// The block device model against a real image file and guest memory (no KVM): requests are
// served in order, and everything a guest can put in a ring that is wrong is refused without
// touching host memory outside guest RAM.
#include "block_device.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMem = 8ull << 20;
constexpr uint64_t kRing = 0x400000;   // ring at the lowest address a device may use
constexpr uint64_t kBuf = 0x500000;
constexpr uint32_t kEntries = 8;
constexpr uint64_t kDiskSectors = 64;

class BlockDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-blk-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    path_ = tmpl;
    ASSERT_EQ(ftruncate(fd, kDiskSectors * 512), 0);
    close(fd);
    auto mem = GuestMemory::Create(kMem);
    ASSERT_TRUE(mem.ok()) << mem.status().message();
    mem_ = std::make_unique<GuestMemory>(std::move(mem).value());
    auto dev = BlockDevice::Open(path_, *mem_);
    ASSERT_TRUE(dev.ok()) << dev.status().message();
    dev_ = std::move(dev).value();
    ASSERT_EQ(dev_->Setup(kRing, kEntries), static_cast<uint32_t>(FERRY_E_OK));
  }
  void TearDown() override { unlink(path_.c_str()); }

  ferry_ring* ring() { return reinterpret_cast<ferry_ring*>(mem_->host() + kRing); }
  ferry_desc* desc(uint32_t i) { return reinterpret_cast<ferry_desc*>(mem_->host() + kRing + 64) + i % kEntries; }
  // Posts one descriptor and rings the doorbell; returns its status.
  uint16_t Submit(uint16_t op, uint64_t sector, uint64_t addr, uint32_t len) {
    uint32_t i = ring()->avail;
    *desc(i) = ferry_desc{addr, len, op, 0xffff, sector, 42};
    std::atomic_ref<uint32_t>(ring()->avail).store(i + 1, std::memory_order_release);
    EXPECT_EQ(dev_->Notify(), static_cast<uint32_t>(FERRY_E_OK));
    EXPECT_EQ(ring()->used, i + 1);
    EXPECT_EQ(desc(i)->id, 42u);
    return desc(i)->status;
  }

  // The image file's bytes, read behind the device's back.
  std::vector<uint8_t> Image() {
    std::vector<uint8_t> b(kDiskSectors * 512);
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    close(fd);
    return b;
  }
  // Fills the image with a pattern no write in these tests produces: byte i is i * 7 + 1.
  void FillImage() {
    std::vector<uint8_t> b(kDiskSectors * 512);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);
    int fd = open(path_.c_str(), O_WRONLY);
    ASSERT_EQ(pwrite(fd, b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    close(fd);
  }
  // Guest buffer `n` (64 KiB apart from kBuf on), filled with `tag`.
  uint64_t Buf(int n, uint8_t tag, uint32_t len) {
    uint64_t gpa = kBuf + uint64_t(n) * 0x10000;
    std::memset(mem_->host() + gpa, tag, len);
    return gpa;
  }
  const uint8_t* At(uint64_t gpa) { return mem_->host() + gpa; }

  std::string path_;
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<BlockDevice> dev_;
};

TEST_F(BlockDeviceTest, WriteFlushReadRoundTripMarksReadBuffersDirty) {
  std::memset(mem_->host() + kBuf, 0xab, 1024);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 3, kBuf, 1024), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_FLUSH, 0, 0, 0), FERRY_STATUS_OK);
  Bitmap dirty(kMem / kPageSize);
  mem_->TakeDeviceDirty(&dirty);  // forget the ring's own dirt
  dirty = Bitmap(kMem / kPageSize);
  EXPECT_EQ(Submit(FERRY_BLK_READ, 3, kBuf + 0x10000, 1024), FERRY_STATUS_OK);
  EXPECT_EQ(std::memcmp(mem_->host() + kBuf, mem_->host() + kBuf + 0x10000, 1024), 0);
  mem_->TakeDeviceDirty(&dirty);
  EXPECT_TRUE(dirty.Test((kBuf + 0x10000) / kPageSize)) << "a device write into guest RAM must be a dirty page";
  EXPECT_TRUE(dirty.Test(kRing / kPageSize));
  // The bytes are in the image itself, at sector 3.
  int fd = open(path_.c_str(), O_RDONLY);
  uint8_t b[1024];
  ASSERT_EQ(pread(fd, b, sizeof b, 3 * 512), 1024);
  close(fd);
  EXPECT_EQ(b[0], 0xab);
  EXPECT_EQ(b[1023], 0xab);
  auto st = dev_->stats();
  EXPECT_EQ(st.writes, 1u);
  EXPECT_EQ(st.reads, 1u);
  EXPECT_EQ(st.flushes, 1u);
}

TEST_F(BlockDeviceTest, MalformedDescriptorsAreRefusedOneByOne) {
  EXPECT_EQ(Submit(9, 0, kBuf, 512), FERRY_STATUS_BAD_REQUEST);                          // unknown op
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, kBuf, 100), FERRY_STATUS_BAD_REQUEST);             // not whole sectors
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, kBuf, 0), FERRY_STATUS_BAD_REQUEST);               // empty
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, kBuf, 2u << 20), FERRY_STATUS_BAD_REQUEST);        // over 1 MiB
  EXPECT_EQ(Submit(FERRY_BLK_READ, kDiskSectors, kBuf, 512), FERRY_STATUS_BAD_REQUEST);  // past the disk
  EXPECT_EQ(Submit(FERRY_BLK_READ, ~0ull, kBuf, 512), FERRY_STATUS_BAD_REQUEST);         // sector overflow
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, kMem - 512 + 4096, 512), FERRY_STATUS_BAD_REQUEST);  // outside RAM
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, ~0ull - 100, 512), FERRY_STATUS_BAD_REQUEST);      // address wraps
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, 0x3000, 512), FERRY_STATUS_BAD_REQUEST);           // the VMM's shared page
  EXPECT_EQ(Submit(FERRY_BLK_FLUSH, 0, 0, 512), FERRY_STATUS_BAD_REQUEST);               // flush with a length
  EXPECT_EQ(dev_->stats().bad_requests, 10u);
  EXPECT_EQ(Submit(FERRY_BLK_READ, kDiskSectors - 1, kBuf, 512), FERRY_STATUS_OK);       // the last sector is fine
}

// Found by review: a guest with two vCPUs rang the doorbell on one and kept posting (bad)
// requests from the other; the device served them for as long as it went on, holding its lock,
// which status needs. One doorbell now serves at most one ring's worth.
TEST_F(BlockDeviceTest, ADoorbellServesAtMostOneRingWhileAnotherVcpuKeepsPosting) {
  std::atomic<bool> stop{false};
  std::thread poster([&] {
    while (!stop.load()) {
      const uint32_t used = std::atomic_ref<uint32_t>(ring()->used).load(std::memory_order_acquire);
      for (uint32_t i = 0; i < kEntries; ++i) *desc(used + i) = ferry_desc{kBuf, 512, 9, 0xffff, 0, 7};
      std::atomic_ref<uint32_t>(ring()->avail).store(used + kEntries, std::memory_order_release);
    }
  });
  while (std::atomic_ref<uint32_t>(ring()->avail).load() == 0) std::this_thread::yield();
  const uint32_t before = std::atomic_ref<uint32_t>(ring()->used).load();
  const auto t0 = std::chrono::steady_clock::now();
  std::future<uint32_t> rang = std::async(std::launch::async, [&] { return dev_->Notify(); });
  const bool returned = rang.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
  stop = true;
  poster.join();
  ASSERT_TRUE(returned) << "the doorbell served the other vCPU's requests as long as it posted";
  EXPECT_EQ(rang.get(), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_LE(std::atomic_ref<uint32_t>(ring()->used).load() - before, kEntries);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST_F(BlockDeviceTest, RingRunningAheadBreaksTheQueueUntilSetUpAgain) {
  ring()->avail = ring()->used + kEntries + 1;
  EXPECT_EQ(dev_->Notify(), static_cast<uint32_t>(FERRY_E_BROKEN));
  EXPECT_EQ(dev_->Notify(), static_cast<uint32_t>(FERRY_E_BROKEN));
  EXPECT_TRUE(dev_->Save().queue.broken);
  ring()->avail = ring()->used;
  ASSERT_EQ(dev_->Setup(kRing, kEntries), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_EQ(Submit(FERRY_BLK_FLUSH, 0, 0, 0), FERRY_STATUS_OK);
}

TEST_F(BlockDeviceTest, BadRingPlacementIsRefused) {
  EXPECT_EQ(dev_->Setup(0x3000, 8), static_cast<uint32_t>(FERRY_E_INVAL));       // system area
  EXPECT_EQ(dev_->Setup(kRing + 8, 8), static_cast<uint32_t>(FERRY_E_INVAL));    // misaligned
  EXPECT_EQ(dev_->Setup(kRing, 3), static_cast<uint32_t>(FERRY_E_INVAL));        // not a power of two
  EXPECT_EQ(dev_->Setup(kRing, 512), static_cast<uint32_t>(FERRY_E_INVAL));      // too many entries
  EXPECT_EQ(dev_->Setup(kMem - 64, 8), static_cast<uint32_t>(FERRY_E_INVAL));    // runs off the end
  EXPECT_EQ(dev_->Setup(~0ull - 63, 8), static_cast<uint32_t>(FERRY_E_INVAL));   // wraps
  EXPECT_EQ(dev_->Notify(), static_cast<uint32_t>(FERRY_E_INVAL));               // nothing set up now
}

TEST_F(BlockDeviceTest, SavedQueueResumesWherePostedRequestsWait) {
  // A request posted but not yet served when the VM was saved is served after the restore,
  // exactly once.
  uint32_t i = ring()->avail;
  std::memset(mem_->host() + kBuf, 0x5a, 512);
  *desc(i) = ferry_desc{kBuf, 512, FERRY_BLK_WRITE, 0xffff, 7, 1};
  ring()->avail = i + 1;
  BlockState saved = dev_->Save();
  EXPECT_EQ(saved.queue.next, i);
  auto fresh = BlockDevice::Open(path_, *mem_);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->Restore(saved).ok());
  EXPECT_EQ((*fresh)->Notify(), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_EQ(desc(i)->status, FERRY_STATUS_OK);
  EXPECT_EQ((*fresh)->stats().writes, 1u);
  EXPECT_EQ((*fresh)->Notify(), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_EQ((*fresh)->stats().writes, 1u) << "served twice";
  saved.sectors += 1;
  EXPECT_FALSE((*fresh)->Restore(saved).ok()) << "a disk of another size must be refused";
}

TEST_F(BlockDeviceTest, JournalRecordsExactlyTheCompletedWritesUntilItOverflows) {
  EXPECT_FALSE(dev_->TakeJournal().ok()) << "no journal before StartJournal";
  std::memset(mem_->host() + kBuf, 0x5a, 1024);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 1, kBuf, 512), FERRY_STATUS_OK);  // before the journal: not recorded
  dev_->StartJournal(2048);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 5, kBuf, 1024), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_READ, 5, kBuf + 0x10000, 512), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 70, kBuf, 512), FERRY_STATUS_BAD_REQUEST);  // refused: not a write
  auto j = dev_->TakeJournal();
  ASSERT_TRUE(j.ok()) << j.status().message();
  ASSERT_EQ(j->size(), 1u);
  EXPECT_EQ((*j)[0].offset, 5u * 512);
  ASSERT_EQ((*j)[0].data.size(), 1024u);
  EXPECT_EQ((*j)[0].data[1023], 0x5a);
  EXPECT_TRUE(dev_->TakeJournal()->empty()) << "taking the journal empties it";
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 8, kBuf, 1024), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 10, kBuf, 1024), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 12, kBuf, 512), FERRY_STATUS_OK) << "the guest's write still succeeds";
  EXPECT_EQ(dev_->TakeJournal().status().code(), ErrorCode::kBusy) << "2.5 KiB into a 2 KiB journal";
  dev_->StopJournal();
}

TEST_F(BlockDeviceTest, OverlayHoldsWritesReadsMergeThemAndCommitWritesExactlyThem) {
  FillImage();
  const std::vector<uint8_t> before = Image();
  dev_->StartOverlay(1 << 20);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 4, Buf(0, 0xa1, 2048), 2048), FERRY_STATUS_OK);  // sectors 4-7
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 6, Buf(1, 0xb2, 1536), 1536), FERRY_STATUS_OK);  // 6-8 replace 6-7
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 20, Buf(2, 0xc3, 512), 512), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_FLUSH, 0, 0, 0), FERRY_STATUS_OK);
  EXPECT_EQ(Image(), before) << "a write or flush under the overlay reached the image";
  EXPECT_EQ(dev_->overlay_bytes(), 6u * 512) << "sectors 4-8 and 20";
  // Sectors 2-10: image, image, a1 a1, b2 b2 b2, image image.
  const uint64_t rd = Buf(3, 0, 9 * 512);
  EXPECT_EQ(Submit(FERRY_BLK_READ, 2, rd, 9 * 512), FERRY_STATUS_OK);
  for (uint64_t s = 2; s <= 10; ++s) {
    const uint8_t* got = At(rd + (s - 2) * 512);
    for (int i = 0; i < 512; i += 511) {
      uint8_t want = s == 4 || s == 5 ? 0xa1 : s >= 6 && s <= 8 ? 0xb2 : before[s * 512 + i];
      ASSERT_EQ(got[i], want) << "sector " << s << " byte " << i;
    }
  }
  ASSERT_TRUE(dev_->CommitOverlay().ok());
  EXPECT_EQ(dev_->overlay_bytes(), 0u);
  std::vector<uint8_t> want = before;
  std::memset(want.data() + 4 * 512, 0xa1, 2 * 512);
  std::memset(want.data() + 6 * 512, 0xb2, 3 * 512);
  std::memset(want.data() + 20 * 512, 0xc3, 512);
  EXPECT_EQ(Image(), want) << "commit must write exactly the held sectors";
  // Off now: writes go straight to the image again.
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 30, Buf(0, 0xd4, 512), 512), FERRY_STATUS_OK);
  EXPECT_EQ(Image()[30 * 512], 0xd4);
  auto st = dev_->stats();
  EXPECT_EQ(st.overlay_writes, 3u);
  EXPECT_EQ(st.writes, 4u);
}

TEST_F(BlockDeviceTest, DiscardedOverlayLeavesTheImageUntouchedAndRefusesLaterWrites) {
  FillImage();
  const std::vector<uint8_t> before = Image();
  dev_->StartOverlay(1 << 20);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 0, Buf(0, 0xee, 4096), 4096), FERRY_STATUS_OK);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, kDiskSectors - 1, Buf(1, 0xef, 512), 512), FERRY_STATUS_OK);
  dev_->DiscardOverlay();
  EXPECT_EQ(dev_->overlay_bytes(), 0u);
  EXPECT_EQ(Image(), before);
  EXPECT_EQ(Submit(FERRY_BLK_READ, 0, Buf(2, 0, 512), 512), FERRY_STATUS_OK);
  EXPECT_EQ(std::memcmp(At(kBuf + 2 * 0x10000), before.data(), 512), 0) << "the discarded bytes are gone";
  // The VM is being thrown away: nothing more of it may reach the shared image.
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 1, Buf(0, 0x11, 512), 512), FERRY_STATUS_IOERR);
  EXPECT_EQ(Submit(FERRY_BLK_FLUSH, 0, 0, 0), FERRY_STATUS_IOERR);
  EXPECT_EQ(Image(), before);
  EXPECT_EQ(dev_->CommitOverlay().code(), ErrorCode::kRefused);
}

// Posts a 2-sector write that does not fit a 4-sector overlay already holding 3, and rings the
// doorbell on another thread (a vCPU); the future is that thread's Notify result.
class BlockDeviceOverlayCapTest : public BlockDeviceTest {
 protected:
  // A failed test may leave the serving thread blocked: release it before it is joined.
  void TearDown() override {
    dev_->DiscardOverlay();
    if (notify_.valid()) notify_.wait();
    BlockDeviceTest::TearDown();
  }
  std::future<uint32_t>& PostOverflowingWrite(uint32_t* index) {
    dev_->StartOverlay(4 * 512);
    EXPECT_EQ(Submit(FERRY_BLK_WRITE, 10, Buf(0, 0x21, 3 * 512), 3 * 512), FERRY_STATUS_OK);
    // Rewriting held sectors fits: it adds nothing.
    EXPECT_EQ(Submit(FERRY_BLK_WRITE, 10, Buf(0, 0x22, 3 * 512), 3 * 512), FERRY_STATUS_OK);
    *index = ring()->avail;
    *desc(*index) = ferry_desc{Buf(1, 0x33, 1024), 1024, FERRY_BLK_WRITE, 0xffff, 13, 7};
    std::atomic_ref<uint32_t>(ring()->avail).store(*index + 1, std::memory_order_release);
    notify_ = std::async(std::launch::async, [this] { return dev_->Notify(); });
    return notify_;
  }
  // True once the device counts a write waiting for the overlay (bounded: 10 s).
  bool WaitUntilBlocked() {
    for (int i = 0; i < 10000 && dev_->stats().overlay_waits == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return dev_->stats().overlay_waits == 1;
  }
  uint32_t Used() { return std::atomic_ref<uint32_t>(ring()->used).load(std::memory_order_acquire); }

  std::future<uint32_t> notify_;
};

TEST_F(BlockDeviceOverlayCapTest, WritePastTheCapWaitsForCommitThenReachesTheImage) {
  FillImage();
  uint32_t i;
  auto& notify = PostOverflowingWrite(&i);
  ASSERT_TRUE(WaitUntilBlocked());
  EXPECT_EQ(notify.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout) << "must wait";
  EXPECT_EQ(Used(), i) << "the request completed before the overlay was committed";
  EXPECT_EQ(dev_->overlay_bytes(), 3u * 512) << "nothing of it may be held past the cap";
  EXPECT_NE(dev_->Save().queue.next, i + 1) << "a waiting request is still posted";
  ASSERT_TRUE(dev_->CommitOverlay().ok());
  ASSERT_EQ(notify.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(notify.get(), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_EQ(Used(), i + 1);
  EXPECT_EQ(desc(i)->status, FERRY_STATUS_OK);
  const std::vector<uint8_t> img = Image();
  for (uint64_t s = 10; s < 13; ++s) EXPECT_EQ(img[s * 512 + 5], 0x22) << "committed sector " << s;
  for (uint64_t s = 13; s < 15; ++s) EXPECT_EQ(img[s * 512 + 5], 0x33) << "the waiting write, after commit, sector " << s;
  EXPECT_EQ(dev_->overlay_bytes(), 0u);
}

TEST_F(BlockDeviceOverlayCapTest, WritePastTheCapFailsOnceTheOverlayIsDiscarded) {
  FillImage();
  const std::vector<uint8_t> before = Image();
  uint32_t i;
  auto& notify = PostOverflowingWrite(&i);
  ASSERT_TRUE(WaitUntilBlocked());
  EXPECT_EQ(Used(), i);
  dev_->DiscardOverlay();
  ASSERT_EQ(notify.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(notify.get(), static_cast<uint32_t>(FERRY_E_OK));
  EXPECT_EQ(Used(), i + 1);
  EXPECT_EQ(desc(i)->status, FERRY_STATUS_IOERR);
  EXPECT_EQ(Image(), before);
}

TEST_F(BlockDeviceTest, OverlayAndJournalAreIndependent) {
  dev_->StartJournal(1 << 20);
  dev_->StartOverlay(1 << 20);
  EXPECT_EQ(Submit(FERRY_BLK_WRITE, 2, Buf(0, 0x44, 512), 512), FERRY_STATUS_OK);
  auto j = dev_->TakeJournal();
  ASSERT_TRUE(j.ok());
  ASSERT_EQ(j->size(), 1u);
  EXPECT_EQ((*j)[0].offset, 2u * 512);
  EXPECT_EQ((*j)[0].data[0], 0x44);
  EXPECT_EQ(Image()[2 * 512], 0) << "journaling must not push a held write to the image";
  ASSERT_TRUE(dev_->CommitOverlay().ok());
  EXPECT_EQ(Image()[2 * 512], 0x44);
}

TEST(BlockDeviceOpen, RefusesImagesThatAreNotWholeSectors) {
  auto mem = GuestMemory::Create(kMem);
  ASSERT_TRUE(mem.ok());
  char tmpl[] = "/tmp/ferry-blk-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_EQ(ftruncate(fd, 1000), 0);
  close(fd);
  auto dev = BlockDevice::Open(tmpl, *mem);
  unlink(tmpl);
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.status().message().find("multiple of 512"), std::string::npos) << dev.status().message();
  EXPECT_FALSE(BlockDevice::Open("/nonexistent/ferry.img", *mem).ok());
}

}  // namespace
}  // namespace ferry::hypervisor
