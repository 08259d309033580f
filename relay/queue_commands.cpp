#include "relay/queue_commands.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <system_error>

#include <nlohmann/json.hpp>

#include "queue/queue_id.hpp"
#include "queue/store.hpp"

namespace stsrelay::relay {

namespace {

std::string rfc3339_utc(queue::TimePoint time) {
  const std::time_t seconds =
      std::chrono::system_clock::to_time_t(std::chrono::floor<std::chrono::seconds>(time));
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::array<char, 32> buffer{};
  std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer.data();
}

// Addresses and remote replies come from other machines: keep their control
// characters from reaching the operator's terminal.
std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '\\' || c == '"') {
      if (c == '\\' || c == '"') {
        out += '\\';
        out += c;
      } else {
        std::array<char, 5> hex{};
        std::snprintf(hex.data(), hex.size(), "\\x%02x", byte);
        out += hex.data();
      }
    } else {
      out += c;
    }
  }
  return out;
}

std::string text_line(const queue::MessageRecord& message) {
  std::string line = message.id + " " + rfc3339_utc(message.arrival) + " " +
                     std::to_string(message.size) + " <" + printable(message.sender) + ">";
  if (message.held) {
    line += " held";
  }
  for (std::size_t i = 0; i < message.recipients.size(); ++i) {
    const auto& recipient = message.recipients[i];
    line += i == 0 ? " -> " : "; ";
    line += "<" + printable(recipient.address) + "> " + std::string(to_string(recipient.status));
    if (recipient.attempts > 0) {
      line += " attempts=" + std::to_string(recipient.attempts);
    }
    if (recipient.next_attempt && (recipient.status == queue::RecipientStatus::queued ||
                                   recipient.status == queue::RecipientStatus::deferred)) {
      line += " next=" + rfc3339_utc(*recipient.next_attempt);
    }
    if (!recipient.last_error.empty()) {
      line += " error=\"" + printable(recipient.last_error) + "\"";
    }
  }
  return line;
}

nlohmann::ordered_json json_message(const queue::MessageRecord& message) {
  nlohmann::ordered_json recipients = nlohmann::ordered_json::array();
  for (const auto& recipient : message.recipients) {
    recipients.push_back({
        {"address", recipient.address},
        {"status", std::string(to_string(recipient.status))},
        {"attempts", recipient.attempts},
        {"last_error", recipient.last_error.empty() ? nlohmann::ordered_json(nullptr)
                                                    : nlohmann::ordered_json(recipient.last_error)},
        {"next_attempt", recipient.next_attempt
                             ? nlohmann::ordered_json(rfc3339_utc(*recipient.next_attempt))
                             : nlohmann::ordered_json(nullptr)},
    });
  }
  return {
      {"id", message.id},
      {"sender", message.sender},
      {"size", message.size},
      {"arrival", rfc3339_utc(message.arrival)},
      {"held", message.held},
      {"client_address", message.client_address},
      {"recipients", std::move(recipients)},
  };
}

// Operator commands never create a queue: a mistyped --config should say
// "nothing there", not leave an empty spool behind.
bool queue_exists(const Config& config) {
  std::error_code error;
  return std::filesystem::is_directory(config.queue.directory, error);
}

tl::expected<queue::Store, int> open_store(const Config& config, std::ostream& err) {
  auto store = queue::Store::open(config.queue.directory);
  if (!store) {
    err << "stsrelay: " << store.error() << "\n";
    return tl::unexpected(1);
  }
  return std::move(*store);
}

enum class Change { remove, hold, release };

int change_message(const Config& config, std::string_view typed_id, Change change,
                   std::ostream& out, std::ostream& err) {
  // Ids are upper case; an operator typing one in lower case means the same.
  std::string id(typed_id);
  std::transform(id.begin(), id.end(), id.begin(), [](char c) {
    return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
  });
  if (!queue::QueueIdGenerator::is_valid(id)) {
    err << "stsrelay: \"" << printable(id) << "\" is not a queue id ("
        << queue::QueueIdGenerator::length << " characters of 0-9 and A-Z as `queue list` shows)\n";
    return 2;
  }
  if (!queue_exists(config)) {
    err << "stsrelay: no message with id " << id << "\n";
    return 1;
  }
  auto store = open_store(config, err);
  if (!store) {
    return store.error();
  }
  const auto done =
      change == Change::remove ? store->remove(id) : store->set_held(id, change == Change::hold);
  if (!done) {
    err << "stsrelay: " << done.error() << "\n";
    return 1;
  }
  if (!*done) {
    err << "stsrelay: no message with id " << id << "\n";
    return 1;
  }
  switch (change) {
    case Change::remove:
      out << id << ": deleted\n";
      break;
    case Change::hold:
      out << id << ": held\n";
      break;
    case Change::release:
      out << id << ": released\n";
      break;
  }
  return 0;
}

}  // namespace

int queue_list(const Config& config, bool json, std::ostream& out, std::ostream& err) {
  std::vector<queue::MessageRecord> messages;
  if (queue_exists(config)) {
    auto store = open_store(config, err);
    if (!store) {
      return store.error();
    }
    auto listed = store->list();
    if (!listed) {
      err << "stsrelay: " << listed.error() << "\n";
      return 1;
    }
    messages = std::move(*listed);
  }
  if (json) {
    nlohmann::ordered_json array = nlohmann::ordered_json::array();
    for (const auto& message : messages) {
      array.push_back(json_message(message));
    }
    out << array.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (const auto& message : messages) {
    out << text_line(message) << "\n";
  }
  return 0;
}

int queue_delete(const Config& config, std::string_view id, std::ostream& out, std::ostream& err) {
  return change_message(config, id, Change::remove, out, err);
}

int queue_hold(const Config& config, std::string_view id, std::ostream& out, std::ostream& err) {
  return change_message(config, id, Change::hold, out, err);
}

int queue_release(const Config& config, std::string_view id, std::ostream& out, std::ostream& err) {
  return change_message(config, id, Change::release, out, err);
}

}  // namespace stsrelay::relay
