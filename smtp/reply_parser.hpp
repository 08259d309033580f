#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

#include "smtp/reply.hpp"

namespace stsrelay::smtp {

// Reads SMTP replies from what a server sends (RFC 5321 §4.2): lines of
// "CODE-text" continued until "CODE text", all with the same code. An RFC 3463
// enhanced status code at the start of the text is moved to Reply::enhanced.
// Socket-free: append the bytes read, then take replies while there are any.
class ReplyParser {
 public:
  // A server that sends longer lines or more of them is broken or hostile.
  static constexpr std::size_t max_line_length = 4096;
  static constexpr std::size_t max_lines = 256;

  void append(std::string_view bytes) { buffer_.append(bytes); }

  // The next complete reply; nothing when more bytes are needed; an error
  // for input that is not an SMTP reply (the connection is then unusable).
  std::optional<tl::expected<Reply, std::string>> next();

  // Bytes received but not yet part of a returned reply.
  std::size_t buffered() const { return buffer_.size(); }

 private:
  std::string buffer_;
  std::optional<Reply> partial_;
};

}  // namespace stsrelay::smtp
