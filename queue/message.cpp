#include "queue/message.hpp"

#include <array>
#include <utility>

namespace stsrelay::queue {

namespace {

// These names are also what the recipients.status column holds: changing one
// is a schema change.
constexpr std::array<std::pair<RecipientStatus, std::string_view>, 4> status_names{{
    {RecipientStatus::queued, "queued"},
    {RecipientStatus::deferred, "deferred"},
    {RecipientStatus::sent, "sent"},
    {RecipientStatus::bounced, "bounced"},
}};

}  // namespace

std::string_view to_string(RecipientStatus status) {
  for (const auto& [value, name] : status_names) {
    if (value == status) {
      return name;
    }
  }
  return "unknown";
}

std::optional<RecipientStatus> recipient_status_from_string(std::string_view text) {
  for (const auto& [value, name] : status_names) {
    if (name == text) {
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace stsrelay::queue
