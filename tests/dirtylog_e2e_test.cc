// Dirty tracking on real KVM: the dirtier guest writes pages from several vCPUs and keeps its
// own record (a write counter per page) while the host harvests repeatedly; a consumer that
// randomly "fails to send" hands sets back with MergeBack. Every page the guest wrote, and
// every record page it changed, must appear in the union of the consumed harvests.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "e2e_util.h"
#include "ferry/dirtylog/dirty_rate.h"
#include "ferry/dirtylog/tracker.h"
#include "ferry/hypervisor/guest_abi.h"
#include "ferry/hypervisor/kvm_dirty_log.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::e2e {
namespace {

using dirtylog::DirtyTracker;
using hypervisor::Vm;

struct Mode {
  const char* name;
  uint32_t ring_entries;  // 0: bitmap; 256 is KVM's smallest ring (one page)
  const char* args;
  bool fills_ring;        // the rate is high enough to force KVM_EXIT_DIRTY_RING_FULL
  uint32_t hot_probe = 0; // DirtyTracker::KeepHotPages (replication's checkpoints)
};
// sequential: each page is written once in the window, so a harvested set that was dropped
// instead of merged back would be lost for good. uniform: pages rewritten concurrently.
constexpr const char* kSequential = "rate_mbps=12 wss_mib=32 pattern=sequential record=1";
constexpr const char* kUniform = "rate_mbps=300 wss_mib=24 pattern=uniform record=1";

class DirtyCoverage : public ::testing::TestWithParam<Mode> {};

std::unique_ptr<Vm> BootDirtier(uint32_t ring_entries, uint32_t vcpus, const std::string& args) {
  hypervisor::VmConfig c{64ull << 20, vcpus, GuestPath("dirtier"), args, ring_entries, {}};
  auto vm = Vm::Boot(c, [](std::string_view) {});
  EXPECT_TRUE(vm.ok()) << vm.status().message();
  if (!vm.ok()) return nullptr;
  EXPECT_TRUE((*vm)->Start().ok());
  EXPECT_TRUE(WaitUntil([&] { return (*vm)->LastReport().fields.count("record_gpa"); }, 20000));
  return std::move(vm).value();
}

uint64_t Field(Vm& vm, const char* key) { return std::stoull(vm.LastReport().fields.at(key)); }

TEST_P(DirtyCoverage, UnionOfHarvestsCoversEveryPageTheGuestWrote) {
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  auto vm = BootDirtier(GetParam().ring_entries, 3, GetParam().args);
  ASSERT_TRUE(vm);
  const uint64_t record_gpa = Field(*vm, "record_gpa"), data_gpa = Field(*vm, "data_gpa");
  const uint64_t wss_pages = Field(*vm, "wss_pages");
  const uint64_t page_count = vm->memory().size() / 4096;
  ASSERT_GT(record_gpa, 0u);

  ASSERT_TRUE(vm->Pause().ok());
  auto tracker = DirtyTracker::Start(*vm);
  ASSERT_TRUE(tracker.ok()) << tracker.status().message();
  auto initial = (*tracker)->Harvest();
  ASSERT_TRUE(initial.ok());
  EXPECT_EQ(initial->Count(), page_count) << "the first harvest is all of RAM";
  (*tracker)->KeepHotPages(GetParam().hot_probe);
  std::vector<uint32_t> before(wss_pages);
  std::memcpy(before.data(), vm->memory().host() + record_gpa, wss_pages * 4);
  ASSERT_TRUE(vm->Resume().ok());

  Bitmap consumed(page_count);
  std::mt19937_64 rng(GetParam().ring_entries + 1);
  int harvests = 0, merged_back = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 40));
    auto set = (*tracker)->Harvest();
    ASSERT_TRUE(set.ok()) << set.status().message();
    ++harvests;
    if (rng() % 4 == 0) {
      (*tracker)->MergeBack(*set);  // the consumer failed: these pages must come back
      ++merged_back;
    } else {
      consumed.MergeFrom(set->pages);
    }
  }
  ASSERT_TRUE(vm->Pause().ok());
  auto last = (*tracker)->Harvest();
  ASSERT_TRUE(last.ok());
  consumed.MergeFrom(last->pages);
  std::vector<uint32_t> after(wss_pages);
  std::memcpy(after.data(), vm->memory().host() + record_gpa, wss_pages * 4);

  uint64_t written = 0, missed = 0, record_missed = 0;
  for (uint64_t p = 0; p < wss_pages; ++p) {
    if (after[p] == before[p]) continue;
    ++written;
    if (!consumed.Test(data_gpa / 4096 + p)) ++missed;
    if (!consumed.Test((record_gpa + p * 4) / 4096)) ++record_missed;
  }
  EXPECT_GT(written, 500u) << "the guest must have written enough pages to make this meaningful";
  EXPECT_GT(merged_back, 0);
  EXPECT_EQ(missed, 0u) << missed << " of " << written << " written pages were never harvested";
  EXPECT_EQ(record_missed, 0u);
  // And harvests are precise: little beyond the written pages, their record pages, stacks
  // and the VMM-written pages.
  uint64_t record_pages = (wss_pages * 4 + 4095) / 4096;
  EXPECT_LT(consumed.Count(), written + record_pages + 1024) << "harvests report far more than was written";
  if (GetParam().fills_ring) {
    EXPECT_GT(vm->dirty_log().ring_full_exits(), 0u) << "a small ring must have filled and been drained";
  }
  RecordProperty("harvests", harvests);
  vm->Stop();
  vm->WaitForExit();
}

INSTANTIATE_TEST_SUITE_P(Sources, DirtyCoverage,
                         ::testing::Values(Mode{"bitmap_sequential", 0, kSequential, false},
                                           Mode{"bitmap_uniform", 0, kUniform, false},
                                           Mode{"bitmap_uniform_hot", 0, kUniform, false, 3},
                                           Mode{"bitmap_sequential_hot", 0, kSequential, false, 3},
                                           Mode{"ring_sequential", 256, kSequential, false},
                                           Mode{"ring_uniform", 256, kUniform, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// KeepHotPages: a page dirty at two harvests in a row is left writable and reported at every
// harvest, written or not, until the probe harvest re-protects it; then, unwritten, it is gone.
TEST(DirtyTrackingTest, HotPagesStayReportedUntilTheProbeThenGoCold) {
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  auto vm = BootDirtier(0, 1, "rate_mbps=200 wss_mib=8 pattern=uniform");
  ASSERT_TRUE(vm);
  auto tracker = DirtyTracker::Start(*vm);
  ASSERT_TRUE(tracker.ok());
  ASSERT_TRUE((*tracker)->Harvest().ok());  // all of RAM, all re-protected
  (*tracker)->KeepHotPages(4);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE((*tracker)->Harvest().ok());  // 1: written since, cleared (not yet hot)
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE((*tracker)->Harvest().ok());  // 2: written in both windows: hot, left writable
  const uint64_t hot = (*tracker)->last_stats().hot_pages;
  EXPECT_GT(hot, 200u) << "a uniform 200 MB/s writer over 8 MiB rewrites most pages in 200 ms";
  ASSERT_TRUE(vm->Pause().ok());       // nothing is written from here on
  auto third = (*tracker)->Harvest();  // 3: the hot pages again, unwritten
  ASSERT_TRUE(third.ok());
  EXPECT_GE(third->Count(), hot) << "a hot page is reported at every harvest until the probe";
  auto fourth = (*tracker)->Harvest();  // 4: the probe: reported once more, and re-protected
  ASSERT_TRUE(fourth.ok());
  EXPECT_GE(fourth->Count(), hot);
  EXPECT_EQ((*tracker)->last_stats().hot_pages, 0u) << "the probe harvest leaves nothing writable";
  auto fifth = (*tracker)->Harvest();  // 5: nothing was written since the probe
  ASSERT_TRUE(fifth.ok());
  EXPECT_LT(fifth->Count(), 16u) << "pages gone cold are no longer reported after the probe";
  vm->Stop();
  vm->WaitForExit();
}

TEST(DirtyTrackingTest, VmmWritesAreTrackedToo) {
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  auto vm = BootDirtier(0, 1, "rate_mbps=0 record=1");
  ASSERT_TRUE(vm);
  auto tracker = DirtyTracker::Start(*vm);
  ASSERT_TRUE(tracker.ok());
  ASSERT_TRUE((*tracker)->Harvest().ok());
  const uint64_t target = Field(*vm, "data_gpa") + 7 * 4096;
  uint64_t value = 42;
  ASSERT_TRUE(vm->memory().Write(target, &value, sizeof value).ok());
  vm->RequestVerify();  // the VMM bumps a counter in the shared page
  auto set = (*tracker)->Harvest();
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->pages.Test(target / 4096)) << "a VMM write into guest RAM must be harvested";
  EXPECT_TRUE(set->pages.Test(FERRY_GPA_SHARED / 4096)) << "the shared page written by the VMM";
  EXPECT_GE(set->device_pages, 2u);
  EXPECT_FALSE(DirtyTracker::Start(*vm).ok()) << "one tracker per VM at a time";
  vm->Stop();
  vm->WaitForExit();
}

TEST(DirtyTrackingTest, RateMeasurementSeesTheGuestsRate) {
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  for (uint32_t ring : {0u, 4096u}) {
    // 40 MB/s over a 32 MiB working set: a 100 ms harvest sees ~1000 distinct pages of ~8000.
    auto vm = BootDirtier(ring, 2, "rate_mbps=40 wss_mib=32");
    ASSERT_TRUE(vm);
    auto rate = dirtylog::MeasureDirtyRate(*vm, 1.0, 0.1);
    ASSERT_TRUE(rate.ok()) << rate.status().message();
    // Generous bounds: this checks the measurement is of the right thing, not timing.
    EXPECT_GT(rate->mb_per_s, 10.0) << rate->source;
    EXPECT_LT(rate->mb_per_s, 120.0) << rate->source;
    if (ring) {
      ASSERT_EQ(rate->per_vcpu_pages_per_s.size(), 2u);
      EXPECT_GT(rate->per_vcpu_pages_per_s[0], 0) << "both vCPUs dirty memory";
      EXPECT_GT(rate->per_vcpu_pages_per_s[1], 0);
    }
    vm->Stop();
    vm->WaitForExit();
  }
}

}  // namespace
}  // namespace ferry::e2e
