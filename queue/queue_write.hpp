#pragma once

#include <optional>
#include <string>
#include <variant>

#include "queue/message.hpp"

namespace stsrelay::queue {

// The outcome of a delivery attempt for one recipient (Store::record_attempt).
struct AttemptRecord {
  std::string message_id;
  std::string address;
  RecipientStatus status = RecipientStatus::deferred;
  std::string last_error;
  std::optional<TimePoint> next_attempt;  // required for queued/deferred
};

// One write the daemon's GroupCommitWriter commits, together with whatever
// else is pending, in one transaction, in the order submitted: a bounce
// (NewMessage) submitted before the AttemptRecord that finishes the original
// is committed no later than it.
using QueueWrite = std::variant<NewMessage, AttemptRecord>;

}  // namespace stsrelay::queue
