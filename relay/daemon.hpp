#pragma once

#include <filesystem>

#include "relay/config.hpp"

namespace stsrelay::relay {

// `stsrelay run`: accepts mail until SIGTERM/SIGINT, then stops accepting,
// lets in-flight sessions finish their current command (a message whose DATA
// is complete is committed and acknowledged; one still arriving is abandoned
// with 421) and exits 0. SIGHUP re-reads config_file (when there is one) and
// applies the log level. Returns the exit status.
int run_daemon(const Config& config, const std::filesystem::path& config_file);

}  // namespace stsrelay::relay
