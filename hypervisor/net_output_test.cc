// NetDevice's output holding over a socketpair standing in for the TAP (no KVM, no TAP):
// while buffering, the guest's frames and the VMM's gratuitous ARPs are held; a discarded
// output never leaves, then or later.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "net_device.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMem = 8ull << 20;
constexpr uint64_t kRing = 0x400000;
constexpr uint64_t kBuf = 0x500000;
constexpr uint32_t kEntries = 8;
constexpr Mac kMac = {0x02, 0xfe, 1, 2, 3, 4};
constexpr uint32_t kIp = 0x0a000005;

class NetOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    wire_ = UniqueFd(sv[1]);
    auto mem = GuestMemory::Create(kMem);
    ASSERT_TRUE(mem.ok()) << mem.status().message();
    mem_ = std::make_unique<GuestMemory>(std::move(mem).value());
    auto dev = NetDevice::OpenOnFd(UniqueFd(sv[0]), kMac, *mem_, [] {});
    ASSERT_TRUE(dev.ok()) << dev.status().message();
    dev_ = std::move(dev).value();
    ASSERT_EQ(dev_->Setup(FERRY_QUEUE_NET_TX, kRing, kEntries), static_cast<uint32_t>(FERRY_E_OK));
  }

  // The guest transmits one ARP frame from its own MAC (the device learns its IP from it).
  void GuestSends() {
    auto* ring = reinterpret_cast<ferry_ring*>(mem_->host() + kRing);
    auto* descs = reinterpret_cast<ferry_desc*>(mem_->host() + kRing + 64);
    const auto frame = GratuitousArp(kMac, kIp);
    std::memcpy(mem_->host() + kBuf, frame.data(), frame.size());
    uint32_t i = ring->avail;
    descs[i % kEntries] = ferry_desc{kBuf, static_cast<uint32_t>(frame.size()), 0, 0xffff, 0, 1};
    std::atomic_ref<uint32_t>(ring->avail).store(i + 1, std::memory_order_release);
    ASSERT_EQ(dev_->Notify(FERRY_QUEUE_NET_TX), static_cast<uint32_t>(FERRY_E_OK));
    ASSERT_EQ(descs[i % kEntries].status, FERRY_STATUS_OK);
  }
  // Frames that left the device so far.
  int Drain() {
    uint8_t b[2048];
    int n = 0;
    while (read(wire_.get(), b, sizeof b) > 0) ++n;
    return n;
  }
  // Bounded wait for the receive thread to have produced all three announcements.
  bool AnnouncementsDone() {
    for (int i = 0; i < 10000 && dev_->stats().announcements < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return dev_->stats().announcements == 3;
  }

  UniqueFd wire_;
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<NetDevice> dev_;
};

TEST_F(NetOutputTest, AnnouncementsAreHeldWhileBufferingAndLeaveWithTheGuestsFrames) {
  dev_->StartBuffering();
  GuestSends();
  dev_->Start();
  dev_->Announce();
  ASSERT_TRUE(AnnouncementsDone());
  EXPECT_EQ(Drain(), 0) << "a buffered device let a frame out";
  EXPECT_EQ(dev_->stats().tx_held, 4u) << "the guest's frame and three announcements";
  dev_->StopBuffering();
  EXPECT_EQ(Drain(), 4);
  EXPECT_EQ(dev_->stats().tx_frames, 4u);
}

TEST_F(NetOutputTest, DiscardedOutputNeverLeaves) {
  dev_->StartBuffering();
  GuestSends();
  dev_->Start();
  dev_->Announce();
  dev_->DiscardOutput();
  GuestSends();
  dev_->Announce();
  dev_->StopBuffering();
  dev_->ReleaseOutput(UINT64_MAX);
  // The announcement timer would fire within 200 ms; a second look after it must still see nothing.
  EXPECT_EQ(Drain(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(Drain(), 0) << "a frame of a discarded output left";
  auto st = dev_->stats();
  EXPECT_EQ(st.tx_frames, 0u);
  EXPECT_EQ(st.tx_held, 0u);
  EXPECT_GE(st.tx_discarded, 2u);
}

TEST_F(NetOutputTest, UnbufferedFramesAndAnnouncementsLeaveAtOnce) {
  GuestSends();
  EXPECT_EQ(Drain(), 1);
  dev_->Start();
  dev_->Announce();
  ASSERT_TRUE(AnnouncementsDone());
  EXPECT_EQ(Drain(), 3);
}

}  // namespace
}  // namespace ferry::hypervisor
