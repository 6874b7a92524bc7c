// Snapshot files: a paused VM's complete state (config, vCPUs, devices, RAM) in one file.
//
// The format is documented in hypervisor/SNAPSHOT.md: magic, version, sections each with a
// length and an XXH3-64 checksum, little-endian, encoded field by field. The writer creates
// "<path>.tmp-<pid>", fsyncs (unless asked not to) and renames only when complete, so a
// crash never leaves a half-written file under the final name. The reader refuses a
// truncated, corrupt or wrong-version file before any vCPU exists. Stateless functions;
// the caller keeps the VM paused while writing.
#pragma once

#include <cstdint>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/guest_memory.h"
#include "ferry/hypervisor/vm.h"

namespace ferry::hypervisor {

struct SnapshotOptions {
  bool fsync = true;  // durability; off for benchmarks of the in-memory path
};

struct SnapshotStats {
  uint64_t file_bytes = 0;
  uint64_t ram_bytes = 0;
  uint64_t data_chunks = 0;  // chunks written
  uint64_t zero_chunks = 0;  // all-zero chunks skipped
  uint64_t elapsed_ns = 0;
};

Result<SnapshotStats> WriteSnapshot(const std::string& path, const VmState& state, const GuestMemory& memory,
                                    const SnapshotOptions& options = {});

struct LoadedSnapshot {
  VmState state;
  GuestMemory memory;
  SnapshotStats stats;
};

Result<LoadedSnapshot> ReadSnapshot(const std::string& path);

}  // namespace ferry::hypervisor
