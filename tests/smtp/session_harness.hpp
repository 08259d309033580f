#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/server_session.hpp"

namespace stsrelay::smtp::testing {

inline std::chrono::system_clock::time_point fixed_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / December / 4} + hours{17} + minutes{40} + seconds{33};
}

inline ServerSessionSettings test_settings() {
  ServerSessionSettings settings;
  settings.hostname = "relay.test";
  settings.max_message_size = 1000;
  settings.max_recipients = 3;
  settings.starttls_offered = true;
  settings.max_errors = 100;
  settings.new_message_id = [n = 0]() mutable { return "ID" + std::to_string(++n); };
  settings.now = [] { return fixed_time(); };
  return settings;
}

// "250 2.1.0" for a reply with an enhanced code, "250" without one; one entry
// per reply (the last line of a multi-line reply).
inline std::vector<std::string> statuses(std::string_view wire) {
  std::vector<std::string> result;
  while (!wire.empty()) {
    const std::size_t end = wire.find("\r\n");
    const std::string_view line = wire.substr(0, end);
    wire.remove_prefix(end == std::string_view::npos ? wire.size() : end + 2);
    if (line.size() >= 4 && line[3] == '-') {
      continue;
    }
    std::string status(line.substr(0, 3));
    const std::string_view rest = line.size() > 4 ? line.substr(4) : std::string_view();
    const std::string_view word = rest.substr(0, rest.find(' '));
    if (word.size() >= 5 && word[1] == '.' &&
        (word[0] == '2' || word[0] == '4' || word[0] == '5')) {
      status += ' ';
      status += word;
    }
    result.push_back(status);
  }
  return result;
}

// Drives a session the way the I/O layer does, committing messages at once.
class Client {
 public:
  explicit Client(ServerSessionSettings settings = test_settings(),
                  std::string address = "192.0.2.1")
      : session_(std::move(settings), std::move(address)) {
    session_.greet();
    greeting_ = session_.take_output();
  }

  // Sends bytes in one chunk and runs the session until it needs input (or
  // stops); returns everything it wrote.
  std::string send(std::string_view bytes) {
    session_.receive(bytes);
    return run();
  }

  // Sends the bytes one at a time.
  std::string trickle(std::string_view bytes) {
    std::string output;
    for (char c : bytes) {
      output += send(std::string_view(&c, 1));
    }
    return output;
  }

  std::string run() {
    std::string output;
    while (true) {
      last_event_ = session_.next();
      output += session_.take_output();
      switch (last_event_) {
        case ServerSession::Event::message_ready:
          messages_.push_back(session_.take_message());
          if (fail_next_commit_) {
            fail_next_commit_ = false;
            session_.message_failed("Error: queue unavailable");
          } else {
            session_.message_queued();
          }
          break;
        case ServerSession::Event::need_input:
        case ServerSession::Event::start_tls:
        case ServerSession::Event::close:
          return output;
      }
    }
  }

  ServerSession& session() { return session_; }
  const std::string& greeting() const { return greeting_; }
  std::vector<ReceivedMessage>& messages() { return messages_; }
  ServerSession::Event last_event() const { return last_event_; }
  void fail_next_commit() { fail_next_commit_ = true; }

 private:
  ServerSession session_;
  std::string greeting_;
  std::vector<ReceivedMessage> messages_;
  ServerSession::Event last_event_ = ServerSession::Event::need_input;
  bool fail_next_commit_ = false;
};

using Statuses = std::vector<std::string>;

}  // namespace stsrelay::smtp::testing
