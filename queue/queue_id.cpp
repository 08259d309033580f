#include "queue/queue_id.hpp"

#include <algorithm>
#include <array>

namespace stsrelay::queue {

namespace {

// Crockford's base32 digits are in ascending ASCII order, so comparing two
// zero-padded encodings as strings compares the numbers.
constexpr std::string_view digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr unsigned bits_per_digit = 5;
constexpr std::uint64_t max_value = (std::uint64_t{1} << (bits_per_digit * 12)) - 1;

int digit_value(char c) {
  const auto at = digits.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

std::string encode(std::uint64_t value) {
  std::string text(QueueIdGenerator::length, '0');
  for (std::size_t i = QueueIdGenerator::length; i-- > 0;) {
    text[i] = digits[value & 0x1f];
    value >>= bits_per_digit;
  }
  return text;
}

std::optional<std::uint64_t> decode(std::string_view text) {
  if (text.size() != QueueIdGenerator::length) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  for (char c : text) {
    const int digit = digit_value(c);
    if (digit < 0) {
      return std::nullopt;
    }
    value = (value << bits_per_digit) | static_cast<std::uint64_t>(digit);
  }
  return value;
}

}  // namespace

QueueIdGenerator::QueueIdGenerator(std::optional<std::string> last_id, Clock clock)
    : clock_(std::move(clock)) {
  // An id we cannot parse was not made by us and says nothing about ours.
  if (last_id) {
    last_ = decode(*last_id).value_or(0);
  }
}

std::string QueueIdGenerator::next() {
  const auto since_epoch = clock_().time_since_epoch();
  const auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch).count();
  const std::uint64_t now = now_us > 0 ? static_cast<std::uint64_t>(now_us) : 0;

  std::lock_guard lock(mutex_);
  // A clock that stands still or steps back must not repeat or reorder ids.
  last_ = std::min(std::max(now, last_ + 1), max_value);
  return encode(last_);
}

bool QueueIdGenerator::is_valid(std::string_view id) {
  return decode(id).has_value();
}

}  // namespace stsrelay::queue
