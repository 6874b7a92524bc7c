#include "ferry/hypervisor/vcpu_state.h"

#include <gtest/gtest.h>

#include <cstring>

namespace ferry::hypervisor {
namespace {

VcpuState Sample() {
  VcpuState s;
  s.index = 3;
  s.parts = VcpuState::kXsave | VcpuState::kXcrs | VcpuState::kEvents | VcpuState::kDebugRegs;
  s.regs.rax = 1;
  s.regs.rip = 0x400123;
  s.regs.rflags = 0x3202;
  s.sregs.cs.selector = 0x33;
  s.sregs.cs.l = 1;
  s.sregs.cr3 = 0x8000;
  s.sregs.efer = 0x501;
  s.sregs.gdt.limit = 79;
  s.xsave.assign(1024, 0);
  for (size_t i = 0; i < s.xsave.size(); ++i) s.xsave[i] = static_cast<uint32_t>(i * 2654435761u);
  s.xcrs.nr_xcrs = 1;
  s.xcrs.xcrs[0].value = 7;
  s.events.interrupt.shadow = 1;
  s.events.exception_payload = 0x1234;
  s.debugregs.dr7 = 0x400;
  s.mp_state = 0;
  s.msrs = {{0x174, 0x10}, {0xc0000100, 0x7fff0000}};
  return s;
}

TEST(VcpuStateTest, RoundTrips) {
  VcpuState in = Sample();
  Encoder e;
  EncodeVcpuState(in, e);
  Decoder d(e.bytes());
  VcpuState out;
  ASSERT_TRUE(DecodeVcpuState(d, &out).ok());
  EXPECT_EQ(d.remaining(), 0u);
  EXPECT_EQ(out.index, 3u);
  EXPECT_EQ(std::memcmp(&in.regs, &out.regs, sizeof in.regs), 0);
  EXPECT_EQ(out.sregs.cs.selector, 0x33);
  EXPECT_EQ(out.sregs.cs.l, 1);
  EXPECT_EQ(out.sregs.cr3, 0x8000u);
  EXPECT_EQ(out.sregs.efer, 0x501u);
  EXPECT_EQ(out.sregs.gdt.limit, 79);
  EXPECT_EQ(out.xsave, in.xsave);
  EXPECT_EQ(out.xcrs.xcrs[0].value, 7u);
  EXPECT_EQ(out.events.interrupt.shadow, 1);
  EXPECT_EQ(out.events.exception_payload, 0x1234u);
  EXPECT_EQ(out.debugregs.dr7, 0x400u);
  EXPECT_EQ(out.msrs, in.msrs);
}

TEST(VcpuStateTest, EveryTruncationIsRefused) {
  Encoder e;
  EncodeVcpuState(Sample(), e);
  for (size_t cut = 0; cut < e.size(); cut += 7) {
    Decoder d(std::span<const uint8_t>(e.bytes().data(), cut));
    VcpuState out;
    EXPECT_FALSE(DecodeVcpuState(d, &out).ok()) << "cut at " << cut;
  }
}

TEST(VcpuStateTest, AbsurdMsrCountIsRefused) {
  VcpuState s = Sample();
  s.msrs.assign(1000, {1, 2});
  Encoder e;
  EncodeVcpuState(s, e);
  Decoder d(e.bytes());
  VcpuState out;
  Status st = DecodeVcpuState(d, &out);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kCorrupt);
}

}  // namespace
}  // namespace ferry::hypervisor
