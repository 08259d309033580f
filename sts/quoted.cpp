#include "sts/quoted.hpp"

namespace stsrelay::sts {

std::string quoted(std::string_view text, std::size_t max_length) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < max_length; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '"' || byte == '\\') {
      out += '\\';
      out += static_cast<char>(byte);
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += static_cast<char>(byte);
    } else {
      out += "\\x";
      out += hex[byte >> 4];
      out += hex[byte & 0xf];
    }
  }
  out += text.size() > max_length ? "\"..." : "\"";
  return out;
}

}  // namespace stsrelay::sts
