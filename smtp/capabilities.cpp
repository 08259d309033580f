#include "smtp/capabilities.hpp"

#include <charconv>
#include <string>
#include <string_view>

namespace stsrelay::smtp {

namespace {

std::string upper(std::string_view text) {
  std::string result(text);
  for (auto& c : result) {
    if (c >= 'a' && c <= 'z') {
      c = static_cast<char>(c - 'a' + 'A');
    }
  }
  return result;
}

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

// RFC 1870: "SIZE" alone or "SIZE 0" declares no fixed limit.
std::optional<std::uint64_t> size_limit_of(std::string_view parameter) {
  parameter = trimmed(parameter);
  std::uint64_t limit = 0;
  auto [end, error] = std::from_chars(parameter.data(), parameter.data() + parameter.size(), limit);
  if (error != std::errc() || end != parameter.data() + parameter.size() || limit == 0) {
    return std::nullopt;
  }
  return limit;
}

}  // namespace

Capabilities parse_capabilities(const Reply& ehlo_reply) {
  Capabilities capabilities;
  if (ehlo_reply.code != 250) {
    return capabilities;
  }
  for (std::size_t i = 1; i < ehlo_reply.lines.size(); ++i) {
    std::string_view line = trimmed(ehlo_reply.lines[i]);
    const std::size_t space = line.find_first_of(" \t");
    const std::string keyword = upper(line.substr(0, space));
    const std::string_view parameter =
        space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    if (keyword == "STARTTLS") {
      capabilities.starttls = true;
    } else if (keyword == "PIPELINING") {
      capabilities.pipelining = true;
    } else if (keyword == "8BITMIME") {
      capabilities.eight_bit_mime = true;
    } else if (keyword == "SMTPUTF8") {
      capabilities.smtputf8 = true;
    } else if (keyword == "ENHANCEDSTATUSCODES") {
      capabilities.enhanced_status_codes = true;
    } else if (keyword == "SIZE") {
      capabilities.size = true;
      capabilities.size_limit = size_limit_of(parameter);
    }
  }
  return capabilities;
}

}  // namespace stsrelay::smtp
