#pragma once

#include <ostream>
#include <string_view>

#include "relay/config.hpp"

namespace stsrelay::relay {

// `stsrelay queue list|delete|hold|release`: work directly on the queue
// database in queue.directory, also while the daemon runs. Return the exit
// status (1 when the id is unknown or the queue cannot be opened, 2 when the
// id is malformed). They never create the queue: with no queue directory,
// `list` shows an empty queue and the others find no message.
int queue_list(const Config& config, bool json, std::ostream& out, std::ostream& err);
int queue_delete(const Config& config, std::string_view id, std::ostream& out, std::ostream& err);
int queue_hold(const Config& config, std::string_view id, std::ostream& out, std::ostream& err);
int queue_release(const Config& config, std::string_view id, std::ostream& out, std::ostream& err);

}  // namespace stsrelay::relay
