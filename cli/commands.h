// The `ferry` subcommands: each registers its flags on the CLI11 app and returns the process
// exit code when run. Thin over the libraries (DESIGN.md: cli/ is the only place that knows
// about flags and process exit codes).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace ferry::cli {

using CommandFn = std::function<int()>;

// Adds run and restore (the VMM process).
void AddVmmCommands(CLI::App& app, CommandFn* selected);
// Adds status, pause, resume, snapshot, verify and stop (clients of a VMM's API).
void AddControlCommands(CLI::App& app, CommandFn* selected);
// Adds incoming and migrate.
void AddMigrateCommands(CLI::App& app, CommandFn* selected);
// Adds standby, replicate and promote.
void AddReplicationCommands(CLI::App& app, CommandFn* selected);
// Adds ha agent, ha status, ha evacuate (the HA manager) and drill.
void AddHaCommands(CLI::App& app, CommandFn* selected);
void AddDrillCommand(CLI::App& app, CommandFn* selected);
// ferry console (cmd_console.cc)
void AddConsoleCommand(CLI::App& app, CommandFn* selected);
// Adds kv-load (a load client for the kvstore guest).
void AddKvCommands(CLI::App& app, CommandFn* selected);

}  // namespace ferry::cli
