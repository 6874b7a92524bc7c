// bench/ha-soak's CI variant (label cluster): the 3-host cluster with two protected kvstore
// VMs for three minutes, a drill every 50 s (killed VM, killed standby, stopped agent, cut
// replication path), every process sampled every 5 s. The verdict must pass: every drill
// with 0 lost writes, never two primaries and its expected outcome, protection back after
// each, and no process growing past the warm-up.
#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>

#include "e2e_util.h"

namespace ferry::e2e {
namespace {

TEST(HaSoak, AShortSoakUnderDrillsPassesItsVerdict) {
  if (::geteuid() != 0 || !HaveKvm()) GTEST_SKIP() << "needs root and a usable /dev/kvm";
  TempDir dir;
  auto r = RunCommand({FERRY_HA_SOAK_BENCH, "--duration-s", "180", "--drill-every-s", "50", "--sample-s", "5",
                       "--warmup-s", "60", "--faults", "kill-vm,kill-standby,stop-agent,cut-replication"},
                      dir.File("ha-soak"), 400000);
  ASSERT_NE(r.code, -1) << "the soak did not finish in time";
  nlohmann::json verdict = LastJsonLine(r.out);
  ASSERT_TRUE(verdict.is_object() && verdict.contains("verdict")) << r.out.substr(0, 4000) << r.err;
  // On failure: the end of the bench's stderr (its seed, and for a VM left unprotected every
  // agent's instances, bookkeeping and last events), then the drills' cards, last, where a CI
  // log's tail keeps them.
  std::string cards;
  std::istringstream lines(r.out);
  for (std::string l; std::getline(lines, l);) {
    if (l.find("\"sample\"") == std::string::npos) cards += l + "\n";
  }
  const std::string err_tail = r.err.size() > 6000 ? r.err.substr(r.err.size() - 6000) : r.err;
  EXPECT_EQ(verdict["verdict"], "pass") << err_tail << cards;
  EXPECT_GE(verdict["drills"].get<int>(), 2);
}

}  // namespace
}  // namespace ferry::e2e
