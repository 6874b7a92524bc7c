// The hypervisor's system layer: the only place that opens /dev/kvm and issues raw ioctls.
// Everything above it sees Status values and owned descriptors. Thread-safe: these are thin
// wrappers; callers own the descriptors they pass in.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::hypervisor::sys {

// ioctl(fd, request, arg), retried on EINTR; `what` names the operation in the error.
Status Ioctl(int fd, unsigned long request, void* arg, const char* what);
Status Ioctl(int fd, unsigned long request, unsigned long arg, const char* what);
// Like Ioctl but returns the non-negative result value.
Result<int> IoctlValue(int fd, unsigned long request, unsigned long arg, const char* what);

struct KvmHandles {
  UniqueFd kvm;         // /dev/kvm
  UniqueFd vm;          // KVM_CREATE_VM
  size_t run_size = 0;  // KVM_GET_VCPU_MMAP_SIZE
};

// Opens /dev/kvm, checks the API version and the capabilities Ferry needs, creates a VM.
Result<KvmHandles> OpenKvm();

// (Re)registers guest RAM as memory slot 0 with `flags` (0, or KVM_MEM_LOG_DIRTY_PAGES).
Status SetMemorySlot(int vm_fd, uint64_t guest_phys_addr, uint64_t size, uint64_t host_addr, uint32_t flags);

// Creates vCPU `index` and maps its kvm_run page. The mapping is released by UnmapRun.
struct VcpuHandles {
  UniqueFd fd;
  kvm_run* run = nullptr;
};
Result<VcpuHandles> CreateVcpu(int vm_fd, int index, size_t run_size);
void UnmapRun(kvm_run* run, size_t run_size);

// The uapi structs kvm_msrs, kvm_msr_list and kvm_xsave end in flexible arrays that g++
// sizes differently from C (an empty-struct member adds bytes), so the ioctl numbers that
// encode their sizes come out wrong in C++ (measured: KVM_GET_MSR_INDEX_LIST is 0xc008ae02
// in C++, 0xc004ae02 in C, and the kernel answers EINVAL). These are the C values.
inline constexpr unsigned long kGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, 4);
inline constexpr unsigned long kGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
inline constexpr unsigned long kSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long kGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
inline constexpr unsigned long kSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);

// Supported MSR indices (KVM_GET_MSR_INDEX_LIST).
Result<std::vector<uint32_t>> MsrIndexList(int kvm_fd);

struct Msr {
  uint32_t index = 0;
  uint64_t value = 0;
};
// Reads the values of `msrs` (by index) from a vCPU; all must be readable.
Status GetMsrs(int vcpu_fd, std::vector<Msr>& msrs);
// Writes all of `msrs` to a vCPU; fails naming the first one KVM refuses.
Status SetMsrs(int vcpu_fd, const std::vector<Msr>& msrs);

}  // namespace ferry::hypervisor::sys
