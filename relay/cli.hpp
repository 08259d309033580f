#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace stsrelay::relay {

// The stsrelay command line (SPEC.md, "Command line"). Returns the exit status:
// 0 success, 1 operational failure, 2 usage or configuration error.
int run_cli(int argc, char** argv);

// The same with the arguments after the program name and explicit streams, so
// that tests can drive it in-process. (`run` still logs to stderr.)
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace stsrelay::relay
