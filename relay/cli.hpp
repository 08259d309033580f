#pragma once

namespace stsrelay::relay {

// The stsrelay command line (SPEC.md, "Command line"). Returns the exit status:
// 0 success, 1 operational failure, 2 usage or configuration error.
int run_cli(int argc, char** argv);

}  // namespace stsrelay::relay
