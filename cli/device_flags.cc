#include "device_flags.h"

#include <sstream>

namespace ferry::cli {

Status ParseNetSpec(const std::string& spec, bool allow_mac, hypervisor::DeviceConfig* config) {
  std::istringstream parts(spec);
  std::string part;
  bool first = true;
  while (std::getline(parts, part, ',')) {
    if (first) {
      if (part.empty() || part.size() > 15 || part.find('=') != std::string::npos) {
        return InvalidArgument("--net: '" + part + "' is not a TAP name (1-15 characters)");
      }
      config->tap = part;
      first = false;
      continue;
    }
    auto eq = part.find('=');
    std::string key = part.substr(0, eq), value = eq == std::string::npos ? "" : part.substr(eq + 1);
    if (key == "bridge" && !value.empty() && value.size() <= 15) {
      config->bridge = value;
    } else if (key == "mac" && allow_mac) {
      FERRY_ASSIGN_OR_RETURN(config->mac, hypervisor::ParseMac(value));
    } else {
      return InvalidArgument("--net: unknown or malformed option '" + part + "' (expected bridge=BR" +
                             std::string(allow_mac ? " or mac=MAC" : "") + ")");
    }
  }
  if (first) return InvalidArgument("--net needs a TAP name");
  return Status::Ok();
}

Result<hypervisor::DeviceOverrides> DeviceFlags::Overrides() const {
  hypervisor::DeviceOverrides o;
  if (!disk.empty()) o.disk_path = disk;
  if (!net.empty()) {
    hypervisor::DeviceConfig c;
    FERRY_RETURN_IF_ERROR(ParseNetSpec(net, false, &c));
    o.tap = c.tap;
    o.bridge = c.bridge;
  }
  return o;
}

void AddDeviceFlags(CLI::App* cmd, DeviceFlags* flags) {
  cmd->add_option("--disk", flags->disk, "Raw disk image for the PV block device")->check(CLI::ExistingFile);
  cmd->add_option("--net", flags->net,
                  "PV NIC on a TAP device: TAP[,bridge=BR][,mac=MAC] (TAP created if absent; mac= on run only)");
}

}  // namespace ferry::cli
