// RunQuiet: runs a command to its end under `timeout` (argv[0] searched in PATH), stdout
// captured into *out, stderr discarded; returns its exit status (124: timed out, -1: it
// could not run). For the short helper commands the drills and the console run.
// OpenPidfd / SignalPidfd: a process held by a pidfd (close-on-exec) and signalled through
// it, never another one that reused its pid (an adopted VMM, a VMM a drill stopped).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::ha {

int RunQuiet(std::vector<std::string> argv, std::string* out = nullptr, int timeout_s = 10);
Result<UniqueFd> OpenPidfd(pid_t pid);
Status SignalPidfd(int pidfd, int sig);

}  // namespace ferry::ha
