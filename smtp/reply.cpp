#include "smtp/reply.hpp"

#include <string>

namespace stsrelay::smtp {

std::string Reply::wire() const {
  const std::string code_text = std::to_string(code);
  std::string wire;
  const std::size_t line_count = lines.empty() ? 1 : lines.size();
  for (std::size_t i = 0; i < line_count; ++i) {
    const bool last = i + 1 == line_count;
    wire += code_text;
    wire += last ? ' ' : '-';
    if (!enhanced.empty()) {
      wire += enhanced;
      if (!lines.empty() && !lines[i].empty()) {
        wire += ' ';
      }
    }
    if (!lines.empty()) {
      wire += lines[i];
    }
    wire += "\r\n";
  }
  return wire;
}

Reply make_reply(int code, std::string_view enhanced, std::string_view text) {
  return Reply{code, std::string(enhanced), {std::string(text)}};
}

}  // namespace stsrelay::smtp
