// The JSON shapes of the status reply's sections: the VM's own, a primary's replication, a
// standby's replica. Pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include "ferry/hypervisor/vm.h"
#include "ferry/replication/replicator.h"
#include "ferry/replication/standby.h"

namespace ferry::vmhost {

// Adds the VM's fields (vcpus, memory, guest, report, devices, ...) to `out`.
void VmStatusJson(hypervisor::Vm& vm, nlohmann::json* out);
nlohmann::json ReportJson(const hypervisor::GuestReport& r);
nlohmann::json ReplicationStatusJson(const replication::ReplicationStatus& s);
nlohmann::json StandbyStatusJson(const replication::StandbyStatus& s);

}  // namespace ferry::vmhost
