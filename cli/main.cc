// ferry: one binary, subcommands (DESIGN.md "CLI and API").
#include <cstdio>
#include <exception>

#include "commands.h"
#include "ferry/base/log.h"
#include "cli_util.h"

int main(int argc, char** argv) {
  CLI::App app{"Ferry: live migration and high availability for virtual machines", "ferry"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log diagnostics to stderr");
  ferry::cli::CommandFn selected;
  ferry::cli::AddVmmCommands(app, &selected);
  ferry::cli::AddControlCommands(app, &selected);
  ferry::cli::AddMigrateCommands(app, &selected);
  ferry::cli::AddReplicationCommands(app, &selected);
  ferry::cli::AddKvCommands(app, &selected);
  ferry::cli::AddHaCommands(app, &selected);
  ferry::cli::AddDrillCommand(app, &selected);
  ferry::cli::AddConsoleCommand(app, &selected);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : ferry::cli::kExitUsage;
  }
  if (verbose) ferry::SetLogLevel(ferry::LogLevel::kInfo);
  // An exception no command caught (an answer of a shape nothing expected, no memory) is an
  // error with its reason and exit code 1, not std::terminate's abort and core dump.
  try {
    return selected ? selected() : ferry::cli::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "ferry: internal error\n");
  }
  return ferry::cli::kExitError;
}
