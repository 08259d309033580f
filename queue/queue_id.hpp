#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace stsrelay::queue {

// Queue ids: the arrival time in microseconds, strictly increasing within the
// process and past the greatest id already in the queue, as 12 characters of
// Crockford base32 (0-9, A-Z without I, L, O, U), so sorting ids as strings
// sorts messages by arrival. Thread-safe.
class QueueIdGenerator {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  explicit QueueIdGenerator(
      std::optional<std::string> last_id = std::nullopt,
      Clock clock = [] { return std::chrono::system_clock::now(); });

  std::string next();

  static constexpr std::size_t length = 12;
  static bool is_valid(std::string_view id);

 private:
  std::mutex mutex_;
  std::uint64_t last_ = 0;
  Clock clock_;
};

}  // namespace stsrelay::queue
