// RunQuiet: runs a command to its end under `timeout` (argv[0] searched in PATH), stdout
// captured into *out, stderr discarded; returns its exit status (124: timed out, -1: it
// could not run). For the short helper commands the drills and the console run.
#pragma once

#include <string>
#include <vector>

namespace ferry::ha {

int RunQuiet(std::vector<std::string> argv, std::string* out = nullptr, int timeout_s = 10);

}  // namespace ferry::ha
