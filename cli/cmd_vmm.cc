// ferry run / ferry restore: the VMM process that runs one guest in the foreground.
#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "device_flags.h"
#include "ferry/base/clock.h"
#include "ferry/base/units.h"
#include "ferry/hypervisor/snapshot.h"
#include "ferry/hypervisor/vm.h"
#include "cli_util.h"
#include "ferry/vmhost/requests.h"

namespace ferry::cli {
namespace {

struct RunFlags {
  std::string guest;
  std::string mem = "256M";
  uint32_t vcpus = 1;
  uint32_t dirty_ring = 0;
  std::string api;
  DeviceFlags devices;
  std::vector<std::string> guest_args;
  uint64_t generation = 0;
  uint64_t lease_ms = 0;
  bool overcommit = false;
};

// Local failures (flags, files, KVM) exit 1, as they always have; API errors map their code.
int Fail(const Status& st) { return cli::Fail(st.message()); }

struct RestoreFlags {
  std::string file;
  std::string api;
  DeviceFlags devices;
  bool no_verify = false;
  bool snapshot_disk = false;
};

int DoRun(const RunFlags& f) {
  auto mem = ParseSize(f.mem);
  if (!mem.ok()) return Fail(mem.status().Annotate("--mem"));
  if (*mem == 0 || *mem % (2u << 20) != 0) return Fail(InvalidArgument("--mem must be a positive multiple of 2M"));
  if (uint64_t host = vmhost::HostMemTotal(); host && *mem > host && !f.overcommit) {
    return Fail(InvalidArgument("--mem " + f.mem + " is more than this host's " + FormatSize(host) +
                                " of memory (--overcommit to run it anyway)"));
  }
  if (f.generation > vmhost::kMaxGeneration) return Fail(InvalidArgument("--generation is too large"));
  hypervisor::VmConfig config;
  config.mem_bytes = *mem;
  config.vcpus = f.vcpus;
  config.dirty_ring_entries = f.dirty_ring;
  config.guest_path = f.guest;
  config.devices.disk_path = f.devices.disk;
  if (!f.devices.net.empty()) {
    if (Status st = ParseNetSpec(f.devices.net, true, &config.devices); !st.ok()) return Fail(st);
  }
  for (const auto& a : f.guest_args) {
    if (a.find('=') == std::string::npos || a.find(' ') != std::string::npos) {
      return Fail(InvalidArgument("guest argument '" + a + "' must be a key=value word"));
    }
    config.guest_args += (config.guest_args.empty() ? "" : " ") + a;
  }
  auto vm = hypervisor::Vm::Boot(config, StdoutConsole());
  if (!vm.ok()) return Fail(vm.status());
  return ExitCodeFor(vmhost::RunVm(std::move(vm).value(), {f.api, false, f.generation, f.lease_ms}));
}

int DoRestore(const RestoreFlags& f) {
  auto loaded = hypervisor::ReadSnapshot(f.file);
  if (!loaded.ok()) return Fail(loaded.status());
  auto& s = loaded->stats;
  std::fprintf(stderr, "ferry: restored %s: %llu MiB RAM (%llu data chunks) in %.1f ms\n", f.file.c_str(),
               static_cast<unsigned long long>(s.ram_bytes >> 20), static_cast<unsigned long long>(s.data_chunks),
               s.elapsed_ns / 1e6);
  auto overrides = f.devices.Overrides();
  if (!overrides.ok()) return Fail(overrides.status());
  // The snapshot names the disk its VM wrote to; opening it read-write is the operator's call.
  const std::string saved_disk = loaded->state.config.devices.disk_path;
  if (!saved_disk.empty() && f.devices.disk.empty() && !f.snapshot_disk) {
    return Fail(InvalidArgument("the snapshot's VM used the disk " + saved_disk +
                                ": pass --disk " + saved_disk + " (or another image) or --snapshot-disk to open it read-write"));
  }
  overrides->ApplyTo(&loaded->state.config.devices);
  if (const auto& disk = loaded->state.config.devices.disk_path; !disk.empty()) {
    std::fprintf(stderr, "ferry: restore opens the disk %s read-write%s\n", disk.c_str(),
                 disk == saved_disk ? " (the snapshot's)" : "");
  }
  auto vm = hypervisor::Vm::FromState(loaded->state, std::move(loaded->memory), StdoutConsole());
  if (!vm.ok()) return Fail(vm.status().Annotate("restore"));
  return ExitCodeFor(vmhost::RunVm(std::move(vm).value(), {f.api, !f.no_verify, 0}));
}

}  // namespace

void AddVmmCommands(CLI::App& app, CommandFn* selected) {
  auto run_flags = std::make_shared<RunFlags>();
  CLI::App* run = app.add_subcommand("run", "Boot a guest ELF and run it in the foreground until it exits");
  run->add_option("GUEST", run_flags->guest, "Guest image (e.g. build/guests/memcheck.elf)")->required()->check(CLI::ExistingFile);
  run->add_option("--mem", run_flags->mem, "Guest RAM (e.g. 256M, 1G; multiple of 2M)")->capture_default_str();
  run->add_option("--vcpus", run_flags->vcpus, "Number of vCPUs")->check(CLI::Range(1, 64))->capture_default_str();
  run->add_option("--api", run_flags->api, "Serve the JSON control API on this unix socket");
  run->add_option("--dirty-ring", run_flags->dirty_ring,
                  "Track dirty pages with per-vCPU KVM dirty rings of N entries (power of two >= 256) "
                  "instead of the dirty bitmap");
  AddDeviceFlags(run, &run_flags->devices);
  run->add_flag("--overcommit", run_flags->overcommit, "Allow --mem beyond this host's memory");
  run->add_option("--generation", run_flags->generation, "The VM's generation (HA fencing token; carried in migration and replication)");
  run->add_option("--lease-ms", run_flags->lease_ms,
                  "HA watchdog: fence the VM unless the API's \"lease\" is renewed within this (0: no lease)")
      ->check(CLI::Range(uint64_t{0}, vmhost::kMaxLeaseMs));
  run->add_option("guest_args", run_flags->guest_args, "key=value words for the guest, after --");
  run->callback([selected, run_flags] { *selected = [run_flags] { return DoRun(*run_flags); }; });

  auto restore_flags = std::make_shared<RestoreFlags>();
  CLI::App* restore = app.add_subcommand("restore", "Start a VM from a snapshot file and run it in the foreground");
  restore->add_option("--file", restore_flags->file, "Snapshot file")->required();
  restore->add_option("--api", restore_flags->api, "Serve the JSON control API on this unix socket");
  AddDeviceFlags(restore, &restore_flags->devices);
  restore->add_flag("--snapshot-disk", restore_flags->snapshot_disk,
                    "Open the disk image the snapshot names (read-write) without --disk");
  restore->add_flag("--no-verify", restore_flags->no_verify, "Do not ask the guest to verify itself after restore");
  restore->callback([selected, restore_flags] { *selected = [restore_flags] { return DoRestore(*restore_flags); }; });
}

}  // namespace ferry::cli
