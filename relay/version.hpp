#pragma once

#include <string>

namespace stsrelay::relay {

// `stsrelay version`: our version and those of the libraries we were built with.
std::string version_report();

}  // namespace stsrelay::relay
