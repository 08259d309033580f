#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stsrelay::queue {

using TimePoint = std::chrono::system_clock::time_point;

// A message as it enters the queue.
struct NewMessage {
  std::string id;  // from QueueIdGenerator: unique, sorts by arrival
  TimePoint arrival;
  std::string sender;  // empty for the null reverse-path
  std::vector<std::string> recipients;
  std::string client_address;
  std::string helo;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
  std::string content;  // header and body, CRLF line ends
};

enum class RecipientStatus { queued, deferred, sent, bounced };

std::string_view to_string(RecipientStatus status);
std::optional<RecipientStatus> recipient_status_from_string(std::string_view text);

struct RecipientRecord {
  std::string address;
  RecipientStatus status = RecipientStatus::queued;
  unsigned attempts = 0;
  std::string last_error;
  std::optional<TimePoint> next_attempt;
};

// What `queue list` shows of a message: everything but the content.
struct MessageRecord {
  std::string id;
  std::string sender;
  std::uint64_t size = 0;
  TimePoint arrival;
  bool held = false;
  std::vector<RecipientRecord> recipients;
  // The rest of the envelope, after the fields above so that existing
  // aggregate initializations keep their meaning.
  std::string client_address;
  std::string helo;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
};

// A recipient whose next attempt is due, with what the delivery engine needs
// of its message's envelope (the content is fetched with Store::content).
struct DueRecipient {
  std::string message_id;
  std::string address;
  RecipientStatus status = RecipientStatus::queued;
  unsigned attempts = 0;
  TimePoint next_attempt;
  TimePoint arrival;
  std::string sender;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
  std::uint64_t size = 0;  // bytes of content, for the SIZE parameter of MAIL FROM
};

}  // namespace stsrelay::queue
