// VmHost without a VM (incoming and standby hosts; this also runs where KVM does not): the
// API answers, refuses what needs a VM with a reason, and stops cleanly.
#include "ferry/vmhost/vm_host.h"

#include <gtest/gtest.h>

#include <atomic>

namespace ferry::vmhost {
namespace {

using nlohmann::json;

const ApiEmit kNoEmit = [](const json&) {};

TEST(VmHost, AnIncomingHostAnswersStatusAndRefusesWhatNeedsAVm) {
  VmHost host(Phase::kIncoming);
  json st = host.Handle({{"op", "status"}}, kNoEmit);
  EXPECT_EQ(st["ok"], true);
  EXPECT_EQ(st["state"], "incoming");
  for (const char* op : {"pause", "resume", "fence", "unfence", "replicate_stop", "release_output"}) {
    json r = host.Handle({{"op", op}}, kNoEmit);
    EXPECT_EQ(r["ok"], false) << op;
    EXPECT_EQ(r["code"], "refused") << op;
    EXPECT_NE(r["error"].get<std::string>().find("no VM runs here yet"), std::string::npos) << r;
  }
  json bad = host.Handle({{"op", "verify"}, {"timeout_ms", "x"}}, kNoEmit);
  EXPECT_EQ(bad["code"], "invalid_argument");
  EXPECT_NE(bad["error"].get<std::string>().find("timeout_ms"), std::string::npos) << bad;
  EXPECT_EQ(host.Handle(json::array(), kNoEmit)["code"], "invalid_argument");
}

TEST(VmHost, StopEndsAHostWithoutAVmOnceAndCancelsItsWait) {
  VmHost host(Phase::kIncoming);
  std::atomic<int> cancelled{0};
  host.SetCancel([&] { ++cancelled; });
  EXPECT_EQ(host.Handle({{"op", "stop"}}, kNoEmit)["ok"], true);
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(host.phase(), Phase::kStopped);
  EXPECT_FALSE(host.WaitForVm([] { return false; }));
  json again = host.Handle({{"op", "stop"}}, kNoEmit);
  EXPECT_EQ(again["code"], "refused");
  EXPECT_EQ(cancelled, 1);
}

// A migration or handover that commits as the operator stops the host: the source has
// stopped for good, so the VM that arrives runs here rather than in a "stopped" host that
// refuses every request (which would leave the only copy running unmanaged).
TEST(VmHost, AVmArrivingAsItsHostIsStoppedRunsThere) {
  for (Phase waiting : {Phase::kIncoming, Phase::kStandby}) {
    VmHost host(waiting);
    host.SetCancel([] {});
    ASSERT_EQ(host.Handle({{"op", "stop"}}, kNoEmit)["ok"], true);
    EXPECT_EQ(host.phase(), Phase::kStopped);
    host.Attach(nullptr, 3, /*arrived=*/true);
    EXPECT_EQ(host.phase(), Phase::kRunning) << PhaseName(waiting);
    EXPECT_EQ(host.Handle({{"op", "status"}}, kNoEmit)["state"], "running");
  }
}

TEST(VmHost, AStandbyWithoutAReplicaRefusesPromotionAndStaysAStandby) {
  VmHost host(Phase::kStandby);
  json r = host.Handle({{"op", "promote"}, {"force", true}}, kNoEmit);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "refused");
  EXPECT_EQ(host.phase(), Phase::kStandby);
  EXPECT_EQ(host.Handle({{"op", "status"}}, kNoEmit)["state"], "standby");
  EXPECT_EQ(host.Handle({{"op", "fence"}}, kNoEmit)["code"], "refused");
}

}  // namespace
}  // namespace ferry::vmhost

namespace ferry::vmhost {
namespace {

// The watchdog lease without a VM: it runs out, says so, refuses unfence until renewed, and a
// renewal clears it. (With a VM, running out fences it: lifecycle_e2e_test, kvm.)
TEST(VmHost, ALeaseRunsOutRefusesUnfenceUntilRenewedAndCanBeEnded) {
  VmHost host(Phase::kIncoming);
  EXPECT_TRUE(host.Handle({{"op", "status"}}, kNoEmit)["ha"]["lease"].is_null());
  json r = host.Handle({{"op", "lease"}, {"ttl_ms", 100}}, kNoEmit);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["ha"]["lease"]["ttl_ms"], 100);
  EXPECT_EQ(r["ha"]["lease"]["expired"], false);
  json st;
  for (int i = 0; i < 100; ++i) {
    st = host.Handle({{"op", "status"}}, kNoEmit);
    if (st["ha"]["lease"]["expired"] == true) break;
    usleep(20 * 1000);
  }
  EXPECT_EQ(st["ha"]["lease"]["expired"], true) << st.dump();
  EXPECT_EQ(st["state"], "incoming") << "no VM: nothing to fence";
  EXPECT_EQ(host.Handle({{"op", "unfence"}}, kNoEmit)["ok"], false);
  r = host.Handle({{"op", "lease"}, {"ttl_ms", 60000}}, kNoEmit);
  EXPECT_EQ(r["ha"]["lease"]["expired"], false);
  EXPECT_GT(r["ha"]["lease"]["remaining_ms"].get<uint64_t>(), 50000u);
  r = host.Handle({{"op", "lease"}, {"ttl_ms", 0}}, kNoEmit);
  EXPECT_TRUE(r["ha"]["lease"].is_null()) << r.dump();
  EXPECT_EQ(host.Handle({{"op", "lease"}}, kNoEmit)["code"], "invalid_argument");
  EXPECT_EQ(host.Handle({{"op", "lease"}, {"ttl_ms", 600001}}, kNoEmit)["code"], "invalid_argument");
  EXPECT_EQ(host.Handle({{"op", "lease"}, {"ttl_ms", -1}}, kNoEmit)["code"], "invalid_argument");
}

}  // namespace
}  // namespace ferry::vmhost
