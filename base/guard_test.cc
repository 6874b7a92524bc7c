#include "ferry/base/guard.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "ferry/base/parallel.h"

namespace ferry {
namespace {

TEST(GuardedTest, AStatusPassesThroughAndAnExceptionBecomesAnInternalError) {
  EXPECT_TRUE(Guarded("x", [] { return Status::Ok(); }).ok());
  EXPECT_EQ(Guarded("x", [] { return Timeout("slow"); }).code(), ErrorCode::kTimeout);
  Status st = Guarded("data stream 1", []() -> Status { throw std::runtime_error("boom"); });
  EXPECT_EQ(st.code(), ErrorCode::kInternal);
  EXPECT_EQ(st.message(), "data stream 1: boom");
  st = Guarded("data stream 2", []() -> Status { throw std::bad_alloc(); });
  EXPECT_EQ(st.message(), "data stream 2: out of memory");
  st = Guarded("replication", []() -> Status { throw 7; });
  EXPECT_EQ(st.message(), "replication: an unknown exception");
}

// A thread's loop returns nothing: returning is Ok, throwing is its failure.
TEST(GuardedTest, AVoidLoopIsOkWhenItReturnsAndFailsWhenItThrows) {
  int ran = 0;
  EXPECT_TRUE(Guarded("vCPU", [&] { ++ran; }).ok());
  EXPECT_EQ(ran, 1);
  Status st = Guarded("vCPU", [] { throw std::runtime_error("bad ring"); });
  EXPECT_EQ(st.code(), ErrorCode::kInternal);
  EXPECT_EQ(st.message(), "vCPU: bad ring");
}

// ParallelFor's workers are threads: an exception in one is that worker's failure, not the
// end of the process.
TEST(GuardedTest, AThrowingParallelForWorkerFailsTheCallInsteadOfTheProcess) {
  Status st = ParallelFor(4, 4, [](uint64_t begin, uint64_t, unsigned) -> Status {
    if (begin == 2) throw std::length_error("vector too long");
    return Status::Ok();
  });
  EXPECT_EQ(st.code(), ErrorCode::kInternal);
  EXPECT_NE(st.message().find("vector too long"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace ferry
