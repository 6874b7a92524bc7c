// What every `ferry` subcommand shares: exit codes, how a failure is printed, the guest
// console on stdout, and flag checks that refuse bad values before anything is sent.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "ferry/base/status.h"
#include "ferry/hypervisor/vm.h"
#include "ferry/vmhost/api_client.h"
#include "ferry/vmhost/api_server.h"
#include "ferry/vmhost/process.h"
#include "ferry/vmhost/requests.h"

namespace ferry::cli {

// The VM host library's API client, server and process helpers, as the commands use them.
using vmhost::ApiEmit;
using vmhost::ApiServer;
using vmhost::CallApi;
using vmhost::KeyToHex;
using vmhost::SignalWatcher;

// Process exit codes (README "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;          // a Ferry error (bad file, KVM failure, peer failed)
inline constexpr int kExitUsage = 2;          // command-line syntax, or a value the VMM refused as invalid
inline constexpr int kExitGuestCrash = 3;     // triple fault, panic, bad hypercall
inline constexpr int kExitIndeterminate = 4;  // a commit went unanswered: the VM stays paused
inline constexpr int kExitRefused = 5;        // the VM's state refuses the request now (busy, fenced, migrating)

// Prints "ferry: MESSAGE" on stderr and returns `code`: how a subcommand fails.
int Fail(const std::string& message, int code = kExitError);
// The exit code for an error that came back from a VMM or a library.
int ExitCodeFor(const Status& status);
int Fail(const Status& status);
// How a VMM process (run, restore, incoming, standby) exits: the guest's own code if it shut
// down cleanly, kExitGuestCrash if it crashed, kExitError on an error.
int ExitCodeFor(const vmhost::HostOutcome& outcome);

// The guest console on stdout, one line at a time, flushed so pipes see it at once.
hypervisor::ConsoleSink StdoutConsole();

// A CLI11 check: the value is a finite number (refuses nan and inf).
extern const CLI::Validator kFinite;

}  // namespace ferry::cli
