#include "kvm_sys.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <vector>

namespace ferry::hypervisor::sys {

Status Ioctl(int fd, unsigned long request, void* arg, const char* what) {
  int r;
  do {
    r = ::ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ErrnoError(what);
  return Status::Ok();
}

Status Ioctl(int fd, unsigned long request, unsigned long arg, const char* what) {
  return Ioctl(fd, request, reinterpret_cast<void*>(arg), what);
}

Result<int> IoctlValue(int fd, unsigned long request, unsigned long arg, const char* what) {
  int r;
  do {
    r = ::ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ErrnoError(what);
  return r;
}

Result<KvmHandles> OpenKvm() {
  KvmHandles h;
  h.kvm.Reset(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!h.kvm.valid()) {
    int err = errno;
    if (err == ENOENT) return Unsupported("/dev/kvm does not exist: KVM is not available on this host");
    if (err == EACCES) return Unsupported("/dev/kvm: permission denied (run as root or join group kvm)");
    return ErrnoError("open /dev/kvm", err);
  }
  FERRY_ASSIGN_OR_RETURN(int version, IoctlValue(h.kvm.get(), KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION"));
  if (version != KVM_API_VERSION) return Unsupported("unexpected KVM API version " + std::to_string(version));
  for (auto [cap, name] : {std::pair{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
                           std::pair{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"}}) {
    FERRY_ASSIGN_OR_RETURN(int has, IoctlValue(h.kvm.get(), KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION"));
    if (!has) return Unsupported(std::string("KVM lacks ") + name);
  }
  FERRY_ASSIGN_OR_RETURN(int run_size, IoctlValue(h.kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"));
  h.run_size = static_cast<size_t>(run_size);
  FERRY_ASSIGN_OR_RETURN(int vm, IoctlValue(h.kvm.get(), KVM_CREATE_VM, 0, "KVM_CREATE_VM"));
  h.vm.Reset(vm);
  return h;
}

Status SetMemorySlot(int vm_fd, uint64_t guest_phys_addr, uint64_t size, uint64_t host_addr, uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.flags = flags;
  region.guest_phys_addr = guest_phys_addr;
  region.memory_size = size;
  region.userspace_addr = host_addr;
  return Ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region,
               flags ? "KVM_SET_USER_MEMORY_REGION (dirty logging on)" : "KVM_SET_USER_MEMORY_REGION");
}

Result<VcpuHandles> CreateVcpu(int vm_fd, int index, size_t run_size) {
  VcpuHandles h;
  FERRY_ASSIGN_OR_RETURN(int fd, IoctlValue(vm_fd, KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU"));
  h.fd.Reset(fd);
  void* p = mmap(nullptr, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoError("mmap kvm_run");
  h.run = static_cast<kvm_run*>(p);
  return h;
}

void UnmapRun(kvm_run* run, size_t run_size) {
  // SAFETY: `run` was mapped by CreateVcpu with exactly run_size and its thread has exited.
  if (run) munmap(run, run_size);
}

// C layout: u32 nmsrs followed by u32 indices.
Result<std::vector<uint32_t>> MsrIndexList(int kvm_fd) {
  uint32_t probe = 0;
  // E2BIG tells us the count.
  if (::ioctl(kvm_fd, kGetMsrIndexList, &probe) < 0 && errno != E2BIG) return ErrnoError("KVM_GET_MSR_INDEX_LIST");
  std::vector<uint32_t> buf(1 + probe);
  buf[0] = probe;
  FERRY_RETURN_IF_ERROR(Ioctl(kvm_fd, kGetMsrIndexList, buf.data(), "KVM_GET_MSR_INDEX_LIST"));
  return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + buf[0]);
}

// C layout of kvm_msrs: u32 nmsrs, u32 pad, then 16-byte entries {u32 index, u32 reserved,
// u64 data}; in u64 words: word 0 = count, then two words per entry.
Status GetMsrs(int vcpu_fd, std::vector<Msr>& msrs) {
  std::vector<uint64_t> buf(1 + 2 * msrs.size());
  buf[0] = msrs.size();
  for (size_t i = 0; i < msrs.size(); ++i) buf[1 + 2 * i] = msrs[i].index;
  FERRY_ASSIGN_OR_RETURN(int n, IoctlValue(vcpu_fd, kGetMsrs, reinterpret_cast<unsigned long>(buf.data()), "KVM_GET_MSRS"));
  if (static_cast<size_t>(n) != msrs.size()) {
    return Internal("KVM_GET_MSRS could not read MSR " + std::to_string(msrs[n].index));
  }
  for (size_t i = 0; i < msrs.size(); ++i) msrs[i].value = buf[2 + 2 * i];
  return Status::Ok();
}

Status SetMsrs(int vcpu_fd, const std::vector<Msr>& msrs) {
  std::vector<uint64_t> buf(1 + 2 * msrs.size());
  buf[0] = msrs.size();
  for (size_t i = 0; i < msrs.size(); ++i) {
    buf[1 + 2 * i] = msrs[i].index;
    buf[2 + 2 * i] = msrs[i].value;
  }
  FERRY_ASSIGN_OR_RETURN(int n, IoctlValue(vcpu_fd, kSetMsrs, reinterpret_cast<unsigned long>(buf.data()), "KVM_SET_MSRS"));
  if (static_cast<size_t>(n) != msrs.size()) {
    return InvalidArgument("KVM refused MSR " + std::to_string(msrs[n].index));
  }
  return Status::Ok();
}

}  // namespace ferry::hypervisor::sys
