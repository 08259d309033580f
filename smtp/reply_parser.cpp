#include "smtp/reply_parser.hpp"

#include <cctype>

namespace stsrelay::smtp {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// "2.1.5 " at the start of text, with the class matching the reply code.
std::size_t enhanced_code_length(std::string_view text, int code) {
  if (text.size() < 5 || text[0] != static_cast<char>('0' + code / 100) || text[1] != '.') {
    return 0;
  }
  std::size_t position = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (position < text.size() && is_digit(text[position]) && digits < 3) {
      ++position;
      ++digits;
    }
    if (digits == 0) {
      return 0;
    }
    if (part == 0) {
      if (position >= text.size() || text[position] != '.') {
        return 0;
      }
      ++position;
    }
  }
  if (position < text.size() && text[position] != ' ') {
    return 0;
  }
  return position;
}

}  // namespace

std::optional<tl::expected<Reply, std::string>> ReplyParser::next() {
  for (;;) {
    const auto end = buffer_.find('\n');
    if (end == std::string::npos) {
      // The line's CR may already be here without its LF.
      if (buffer_.size() > max_line_length + 1) {
        return tl::unexpected(std::string("reply line longer than ") +
                              std::to_string(max_line_length) + " octets");
      }
      return std::nullopt;
    }
    std::string_view line(buffer_.data(), end);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.size() > max_line_length) {
      return tl::unexpected(std::string("reply line longer than ") +
                            std::to_string(max_line_length) + " octets");
    }
    if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
        line[0] < '2' || line[0] > '5' || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      return tl::unexpected("malformed reply line \"" + std::string(line.substr(0, 80)) + "\"");
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    const bool last = line.size() == 3 || line[3] == ' ';
    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();

    if (!partial_) {
      partial_.emplace();
      partial_->code = code;
    } else if (partial_->code != code) {
      return tl::unexpected("reply code changed from " + std::to_string(partial_->code) + " to " +
                            std::to_string(code) + " within one reply");
    }
    if (std::size_t length = enhanced_code_length(text, code); length > 0) {
      if (partial_->enhanced.empty()) {
        partial_->enhanced = std::string(text.substr(0, length));
      }
      text.remove_prefix(std::min(length + 1, text.size()));
    }
    partial_->lines.emplace_back(text);
    buffer_.erase(0, end + 1);
    if (last) {
      Reply reply = std::move(*partial_);
      partial_.reset();
      return reply;
    }
    if (partial_->lines.size() >= max_lines) {
      return tl::unexpected(std::string("reply of more than ") + std::to_string(max_lines) +
                            " lines");
    }
  }
}

}  // namespace stsrelay::smtp
