// The VM's side of its PV devices: opening their backends, the queue hypercalls, quiescing
// them around a pause, restoring their saved state, and their status.
#include <sys/random.h>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/hypervisor/guest_abi.h"
#include "vm_core.h"

namespace ferry::hypervisor {

Status VmCore::OpenDevices() {
  const DeviceConfig& dc = vm_->config().devices;
  if (!dc.disk_path.empty()) {
    FERRY_ASSIGN_OR_RETURN(block_, BlockDevice::Open(dc.disk_path, vm_->memory()));
  }
  if (!dc.tap.empty()) {
    FERRY_ASSIGN_OR_RETURN(net_, NetDevice::Open(dc, vm_->memory(), [this] { RaiseIrq(); }));
  }
  PublishDeviceInfo();
  return Status::Ok();
}

// What the guest finds in its shared page; written at boot and again after a restore or
// migration (the saved RAM brought the old host's page), since the backends are this host's.
void VmCore::PublishDeviceInfo() {
  const DeviceConfig& dc = vm_->config().devices;
  auto* page = reinterpret_cast<ferry_shared_page*>(vm_->memory().host() + FERRY_GPA_SHARED);
  page->blk_sectors = block_ ? block_->sectors() : 0;
  page->net_present = net_ ? 1 : 0;
  for (int i = 0; i < 6; ++i) page->net_mac[i] = net_ ? dc.mac[i] : 0;
  vm_->memory().MarkDirty(FERRY_GPA_SHARED, sizeof(ferry_shared_page));
}

Status VmCore::RestoreDevices(const VmState& state) {
  PublishDeviceInfo();
  if (state.block.present && !block_) return InvalidArgument("the saved VM has a disk: give it one (--disk IMAGE)");
  if (state.net.present && !net_) return InvalidArgument("the saved VM has a NIC: give it one (--net TAP)");
  if (block_) FERRY_RETURN_IF_ERROR(block_->Restore(state.block).Annotate("disk"));
  if (net_) {
    FERRY_RETURN_IF_ERROR(net_->Restore(state.net).Annotate("NIC"));
    announce_on_start_ = state.net.guest_ip != 0;
  }
  return Status::Ok();
}

uint64_t VmCore::QueueHypercall(uint32_t nr, const uint64_t* args) {
  const uint64_t queue = args[0];
  if (queue == FERRY_QUEUE_BLK) {
    if (!block_) return FERRY_E_NODEV;
    return nr == FERRY_HC_QUEUE_SETUP ? block_->Setup(args[1], args[2]) : block_->Notify();
  }
  if (queue == FERRY_QUEUE_NET_RX || queue == FERRY_QUEUE_NET_TX) {
    if (!net_) return FERRY_E_NODEV;
    uint32_t q = static_cast<uint32_t>(queue);
    return nr == FERRY_HC_QUEUE_SETUP ? net_->Setup(q, args[1], args[2]) : net_->Notify(q);
  }
  return FERRY_E_NODEV;
}

// After the vCPUs parked: nothing more is written into guest memory, and completed disk
// writes are durable for whoever opens the image next (a migration's destination).
void VmCore::QuiesceDevices() {
  if (net_) net_->Hold();
  if (block_) {
    Status st = block_->Quiesce();
    if (!st.ok()) FERRY_LOG_ERROR("pause: %s", st.message().c_str());
  }
}

DeviceReport VmCore::Devices() const {
  DeviceReport r;
  const DeviceConfig& dc = vm_->config().devices;
  if (block_) {
    r.has_disk = true;
    r.disk_path = dc.disk_path;
    r.disk_sectors = block_->sectors();
    r.block = block_->stats();
  }
  if (net_) {
    r.has_nic = true;
    r.tap = dc.tap;
    r.mac = dc.mac;
    r.guest_ip = net_->guest_ip();
    r.net = net_->stats();
  }
  return r;
}

void Vm::StartOutputBuffering() {
  if (auto* n = core_->net()) n->StartBuffering();
}

uint64_t Vm::SealOutput() { return core_->net() ? core_->net()->SealOutput() : 0; }

void Vm::ReleaseOutput(uint64_t epoch) {
  if (auto* n = core_->net()) n->ReleaseOutput(epoch);
}

void Vm::StopOutputBuffering() {
  if (auto* n = core_->net()) n->StopBuffering();
}

void Vm::DiscardOutput() {
  if (auto* n = core_->net()) n->DiscardOutput();
}

void Vm::StartDiskJournal(uint64_t cap_bytes) {
  if (auto* b = core_->block()) b->StartJournal(cap_bytes);
}

Result<std::vector<DiskWrite>> Vm::TakeDiskJournal() {
  if (auto* b = core_->block()) return b->TakeJournal();
  return std::vector<DiskWrite>{};
}

void Vm::StopDiskJournal() {
  if (auto* b = core_->block()) b->StopJournal();
}

void Vm::StartDiskOverlay(uint64_t cap_bytes) {
  if (auto* b = core_->block()) b->StartOverlay(cap_bytes);
}

Status Vm::CommitDiskOverlay() {
  if (auto* b = core_->block()) return b->CommitOverlay();
  return Status::Ok();
}

void Vm::DiscardDiskOverlay() {
  if (auto* b = core_->block()) b->DiscardOverlay();
}

std::array<uint8_t, 6> GenerateMac() {
  std::array<uint8_t, 6> mac{0x02, 0xfe, 0, 0, 0, 0};  // locally administered, unicast
  if (::getrandom(mac.data() + 2, 4, 0) != 4) {
    uint64_t t = MonotonicNs();
    for (int i = 0; i < 4; ++i) mac[2 + i] = static_cast<uint8_t>(t >> (8 * i));
  }
  return mac;
}

}  // namespace ferry::hypervisor
