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
