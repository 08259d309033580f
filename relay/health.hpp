#pragma once

#include <chrono>
#include <ostream>

#include "relay/config.hpp"

namespace stsrelay::relay {

// `stsrelay health`: whether the relay's SMTP listener really answers, for a
// container HEALTHCHECK or a Kubernetes probe. Connects to the first
// `listen.addresses` entry (a wildcard address through loopback), expects
// the 220 greeting within `timeout`, and says QUIT. Exit status 0 when it
// did, 1 with the reason on `err` when it did not.
int check_health(const Config& config, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err);

}  // namespace stsrelay::relay
