// The soak's CI variant on real KVM: bench/soak's driver runs a 64 MiB memcheck VM for two
// minutes under 50 API calls/s (status, pause/resume, verify, malformed requests), with a
// snapshot every 20 s and a dirty-rate probe every 10 s. After a 30 s warm-up the VMM's RSS,
// mappings, threads and descriptors must stay flat, every reply must be the expected one, and
// the VM must still run and verify at the end. The driver's verdict line says which failed.
#include <gtest/gtest.h>

#include "e2e_util.h"

namespace ferry::e2e {
namespace {

#define REQUIRE_KVM() \
  if (!HaveKvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

TEST(Soak, VmmStaysFlatAndHealthyUnderApiLoad) {
  REQUIRE_KVM();
  TempDir dir;
  auto r = RunCommand({FERRY_SOAK_BENCH, "--duration-s", "120", "--rate", "50", "--warmup-s", "30",
                       "--snapshot-every-s", "20", "--dirty-rate-every-s", "10", "--sample-every-s", "2",
                       "--json-only"},
                      dir.File("soak"), 240000);
  ASSERT_NE(r.code, -1) << "the soak did not finish within 240 s";
  nlohmann::json verdict = LastJsonLine(r.out);
  ASSERT_TRUE(verdict.is_object() && verdict.contains("verdict")) << r.out << r.err;
  EXPECT_EQ(verdict["errors"], 0) << verdict["first_errors"].dump(1);
  EXPECT_TRUE(verdict["flat"].get<bool>()) << verdict["growth_per_10k_calls"].dump();
  EXPECT_TRUE(verdict["healthy"].get<bool>()) << verdict.dump(1);
  EXPECT_EQ(verdict["final_verify"], "passed");
  EXPECT_GE(verdict["calls"].get<uint64_t>(), 5000u);  // the rate was held: about 120 s x 50/s
  EXPECT_EQ(r.code, 0) << r.err;
}

}  // namespace
}  // namespace ferry::e2e
