#include "ferry/hypervisor/vcpu_state.h"

namespace ferry::hypervisor {
namespace {

constexpr uint32_t kMaxMsrs = 256;
constexpr uint32_t kXsaveWords = 1024;

// KVM's __u64 is unsigned long long; our decoder speaks uint64_t.
void Get64(Decoder& d, __u64* v) {
  uint64_t t = 0;
  d.GetU64(&t);
  *v = t;
}

void PutSegment(Encoder& e, const kvm_segment& s) {
  e.PutU64(s.base);
  e.PutU32(s.limit);
  e.PutU16(s.selector);
  for (uint8_t b : {s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable}) e.PutU8(b);
}

void GetSegment(Decoder& d, kvm_segment* s) {
  Get64(d, &s->base);
  d.GetU32(&s->limit);
  d.GetU16(&s->selector);
  for (uint8_t* b : {&s->type, &s->present, &s->dpl, &s->db, &s->s, &s->l, &s->g, &s->avl, &s->unusable}) d.GetU8(b);
}

void PutDtable(Encoder& e, const kvm_dtable& t) {
  e.PutU64(t.base);
  e.PutU16(t.limit);
}

void GetDtable(Decoder& d, kvm_dtable* t) {
  Get64(d, &t->base);
  d.GetU16(&t->limit);
}

// kvm_regs is 18 consecutive u64 registers in a fixed architectural order.
std::span<__u64, 18> RegWords(kvm_regs& r) { return std::span<__u64, 18>(&r.rax, 18); }
std::span<const __u64, 18> RegWords(const kvm_regs& r) { return std::span<const __u64, 18>(&r.rax, 18); }
static_assert(sizeof(kvm_regs) == 18 * 8);

void PutSregs(Encoder& e, const kvm_sregs& s) {
  for (const kvm_segment* seg : {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt}) PutSegment(e, *seg);
  PutDtable(e, s.gdt);
  PutDtable(e, s.idt);
  for (uint64_t v : {s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base}) e.PutU64(v);
  for (uint64_t v : s.interrupt_bitmap) e.PutU64(v);
}

void GetSregs(Decoder& d, kvm_sregs* s) {
  for (kvm_segment* seg : {&s->cs, &s->ds, &s->es, &s->fs, &s->gs, &s->ss, &s->tr, &s->ldt}) GetSegment(d, seg);
  GetDtable(d, &s->gdt);
  GetDtable(d, &s->idt);
  for (__u64* v : {&s->cr0, &s->cr2, &s->cr3, &s->cr4, &s->cr8, &s->efer, &s->apic_base}) Get64(d, v);
  for (auto& v : s->interrupt_bitmap) Get64(d, &v);
}

void PutEvents(Encoder& e, const kvm_vcpu_events& v) {
  for (uint8_t b : {v.exception.injected, v.exception.nr, v.exception.has_error_code, v.exception.pending}) e.PutU8(b);
  e.PutU32(v.exception.error_code);
  for (uint8_t b : {v.interrupt.injected, v.interrupt.nr, v.interrupt.soft, v.interrupt.shadow}) e.PutU8(b);
  for (uint8_t b : {v.nmi.injected, v.nmi.pending, v.nmi.masked}) e.PutU8(b);
  e.PutU32(v.sipi_vector);
  e.PutU32(v.flags);
  for (uint8_t b : {v.smi.smm, v.smi.pending, v.smi.smm_inside_nmi, v.smi.latched_init}) e.PutU8(b);
  e.PutU8(v.triple_fault.pending);
  e.PutU8(v.exception_has_payload);
  e.PutU64(v.exception_payload);
}

void GetEvents(Decoder& d, kvm_vcpu_events* v) {
  for (__u8* b : {&v->exception.injected, &v->exception.nr, &v->exception.has_error_code, &v->exception.pending}) d.GetU8(b);
  d.GetU32(&v->exception.error_code);
  for (__u8* b : {&v->interrupt.injected, &v->interrupt.nr, &v->interrupt.soft, &v->interrupt.shadow}) d.GetU8(b);
  for (__u8* b : {&v->nmi.injected, &v->nmi.pending, &v->nmi.masked}) d.GetU8(b);
  d.GetU32(&v->sipi_vector);
  d.GetU32(&v->flags);
  for (__u8* b : {&v->smi.smm, &v->smi.pending, &v->smi.smm_inside_nmi, &v->smi.latched_init}) d.GetU8(b);
  d.GetU8(&v->triple_fault.pending);
  d.GetU8(&v->exception_has_payload);
  Get64(d, &v->exception_payload);
}

}  // namespace

void EncodeVcpuState(const VcpuState& s, Encoder& e) {
  e.PutU32(s.index);
  e.PutU32(s.parts);
  for (uint64_t v : RegWords(s.regs)) e.PutU64(v);
  PutSregs(e, s.sregs);
  if (s.parts & VcpuState::kXsave) {
    for (uint32_t i = 0; i < kXsaveWords; ++i) e.PutU32(i < s.xsave.size() ? s.xsave[i] : 0);
  }
  if (s.parts & VcpuState::kFpu) {
    for (const auto& reg : s.fpu.fpr) e.PutBytes(reg);
    e.PutU16(s.fpu.fcw);
    e.PutU16(s.fpu.fsw);
    e.PutU8(s.fpu.ftwx);
    e.PutU16(s.fpu.last_opcode);
    e.PutU64(s.fpu.last_ip);
    e.PutU64(s.fpu.last_dp);
    for (const auto& reg : s.fpu.xmm) e.PutBytes(reg);
    e.PutU32(s.fpu.mxcsr);
  }
  if (s.parts & VcpuState::kXcrs) {
    e.PutU32(s.xcrs.nr_xcrs);
    e.PutU32(s.xcrs.flags);
    for (uint32_t i = 0; i < s.xcrs.nr_xcrs; ++i) {
      e.PutU32(s.xcrs.xcrs[i].xcr);
      e.PutU64(s.xcrs.xcrs[i].value);
    }
  }
  if (s.parts & VcpuState::kEvents) PutEvents(e, s.events);
  if (s.parts & VcpuState::kDebugRegs) {
    for (uint64_t v : s.debugregs.db) e.PutU64(v);
    e.PutU64(s.debugregs.dr6);
    e.PutU64(s.debugregs.dr7);
    e.PutU64(s.debugregs.flags);
  }
  e.PutU32(s.mp_state);
  e.PutU32(static_cast<uint32_t>(s.msrs.size()));
  for (auto [index, value] : s.msrs) {
    e.PutU32(index);
    e.PutU64(value);
  }
}

Status DecodeVcpuState(Decoder& d, VcpuState* s) {
  *s = VcpuState{};
  d.GetU32(&s->index);
  d.GetU32(&s->parts);
  for (auto& v : RegWords(s->regs)) Get64(d, &v);
  GetSregs(d, &s->sregs);
  if (s->parts & VcpuState::kXsave) {
    s->xsave.resize(kXsaveWords);
    for (auto& w : s->xsave) d.GetU32(&w);
  }
  if (s->parts & VcpuState::kFpu) {
    std::span<const uint8_t> b;
    for (auto& reg : s->fpu.fpr) {
      if (d.GetBytes(16, &b)) std::copy(b.begin(), b.end(), reg);
    }
    d.GetU16(&s->fpu.fcw);
    d.GetU16(&s->fpu.fsw);
    d.GetU8(&s->fpu.ftwx);
    d.GetU16(&s->fpu.last_opcode);
    Get64(d, &s->fpu.last_ip);
    Get64(d, &s->fpu.last_dp);
    for (auto& reg : s->fpu.xmm) {
      if (d.GetBytes(16, &b)) std::copy(b.begin(), b.end(), reg);
    }
    d.GetU32(&s->fpu.mxcsr);
  }
  if (s->parts & VcpuState::kXcrs) {
    d.GetU32(&s->xcrs.nr_xcrs);
    d.GetU32(&s->xcrs.flags);
    if (s->xcrs.nr_xcrs > KVM_MAX_XCRS) return Corrupt("vCPU state: too many XCRs");
    for (uint32_t i = 0; i < s->xcrs.nr_xcrs; ++i) {
      d.GetU32(&s->xcrs.xcrs[i].xcr);
      Get64(d, &s->xcrs.xcrs[i].value);
    }
  }
  if (s->parts & VcpuState::kEvents) GetEvents(d, &s->events);
  if (s->parts & VcpuState::kDebugRegs) {
    for (auto& v : s->debugregs.db) Get64(d, &v);
    Get64(d, &s->debugregs.dr6);
    Get64(d, &s->debugregs.dr7);
    Get64(d, &s->debugregs.flags);
  }
  d.GetU32(&s->mp_state);
  uint32_t n = 0;
  d.GetU32(&n);
  if (n > kMaxMsrs) return Corrupt("vCPU state: MSR count " + std::to_string(n) + " exceeds " + std::to_string(kMaxMsrs));
  for (uint32_t i = 0; i < n && d.ok(); ++i) {
    uint32_t index;
    uint64_t value;
    d.GetU32(&index);
    d.GetU64(&value);
    s->msrs.emplace_back(index, value);
  }
  if (!d.ok()) return Corrupt("vCPU state is truncated");
  return Status::Ok();
}

}  // namespace ferry::hypervisor
