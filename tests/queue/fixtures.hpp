#pragma once

#include <filesystem>
#include <stdexcept>
#include <stdlib.h>
#include <string>
#include <system_error>
#include <vector>

#include "queue/message.hpp"
#include "queue/store.hpp"

namespace stsrelay::queue::test_support {

// A fresh directory under the system's temporary directory, removed with all
// it holds when the test ends.
class TempDirectory {
 public:
  TempDirectory() {
    std::string name = (std::filesystem::temp_directory_path() / "stsrelay-queue-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed for " + name);
    }
    path_ = name;
  }
  ~TempDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Times with whole microseconds, the resolution the queue keeps.
inline TimePoint at_microseconds(std::int64_t value) {
  return TimePoint(
      std::chrono::duration_cast<TimePoint::duration>(std::chrono::microseconds(value)));
}

inline NewMessage make_message(std::string id,
                               std::vector<std::string> recipients = {"rcpt@example.org"},
                               std::string content = "Subject: test\r\n\r\nbody\r\n") {
  NewMessage message;
  message.id = std::move(id);
  message.arrival = at_microseconds(1'700'000'000'000'000);
  message.sender = "sender@example.net";
  message.recipients = std::move(recipients);
  message.client_address = "127.0.0.1";
  message.helo = "client.example.net";
  message.content = std::move(content);
  return message;
}

// The store or the listing, or an exception that fails the test with the reason.
inline Store open_store(const std::filesystem::path& directory) {
  auto store = Store::open(directory);
  if (!store) {
    throw std::runtime_error(store.error());
  }
  return std::move(*store);
}

inline std::vector<MessageRecord> list(Store& store) {
  auto records = store.list();
  if (!records) {
    throw std::runtime_error(records.error());
  }
  return std::move(*records);
}

}  // namespace stsrelay::queue::test_support
