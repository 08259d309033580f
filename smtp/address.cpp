#include "smtp/address.hpp"

#include <arpa/inet.h>
#include <array>
#include <cstring>
#include <string>

namespace stsrelay::smtp {
namespace {

bool is_alpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}
bool is_non_ascii(unsigned char c) {
  return c >= 0x80;
}

// RFC 5322 atext, widened by RFC 6531 to UTF-8; the UTF-8 is validated once
// the whole path is known.
bool is_atext(unsigned char c) {
  if (is_alpha(c) || is_digit(c) || is_non_ascii(c)) {
    return true;
  }
  return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != '\0';
}

// RFC 5321 qtextSMTP (RFC 6531 adds UTF-8).
bool is_qtext(unsigned char c) {
  return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126) || is_non_ascii(c);
}

// RFC 5321 Let-dig; a U-label (RFC 6531) may use any UTF-8 character.
bool is_let_dig(unsigned char c) {
  return is_alpha(c) || is_digit(c) || is_non_ascii(c);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}

  bool at_end() const { return pos_ >= text_.size(); }
  unsigned char peek() const { return at_end() ? '\0' : static_cast<unsigned char>(text_[pos_]); }
  bool consume(char c) {
    if (!at_end() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void advance() { ++pos_; }
  std::size_t pos() const { return pos_; }
  std::string_view since(std::size_t start) const { return text_.substr(start, pos_ - start); }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

// sub-domain *("." sub-domain), each sub-domain Let-dig [Ldh-str].
bool parse_domain_name(Cursor& in) {
  do {
    if (!is_let_dig(in.peek())) {
      return false;
    }
    unsigned char last = in.peek();
    in.advance();
    while (is_let_dig(in.peek()) || in.peek() == '-') {
      last = in.peek();
      in.advance();
    }
    if (last == '-') {
      return false;
    }
  } while (in.consume('.'));
  return true;
}

bool is_ipv4_literal(std::string_view text) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t digits = 0;
    int value = 0;
    while (i < text.size() && is_digit(text[i]) && digits < 4) {
      value = value * 10 + (text[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0 || digits > 3 || value > 255) {
      return false;
    }
    ++parts;
    if (i == text.size()) {
      return parts == 4;
    }
    if (text[i] != '.' || parts == 4) {
      return false;
    }
    ++i;
  }
}

bool is_ipv6_literal(std::string_view text) {
  // The longest textual IPv6 address (with an embedded IPv4 part) is 45 octets.
  if (text.empty() || text.size() > 45) {
    return false;
  }
  for (unsigned char c : text) {
    if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
          c == '.')) {
      return false;
    }
  }
  std::array<char, 46> buffer{};
  std::memcpy(buffer.data(), text.data(), text.size());
  unsigned char address[16];
  return inet_pton(AF_INET6, buffer.data(), address) == 1;
}

// address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]"; general address
// literals have no standardised tag besides IPv6, so they are refused.
bool parse_address_literal(Cursor& in) {
  if (!in.consume('[')) {
    return false;
  }
  const std::size_t start = in.pos();
  while (!in.at_end() && in.peek() != ']' && in.peek() != '[' && in.peek() != '>') {
    in.advance();
  }
  const std::string_view inside = in.since(start);
  if (!in.consume(']')) {
    return false;
  }
  constexpr std::string_view ipv6_tag = "IPv6:";
  if (inside.size() > ipv6_tag.size() && iequals(inside.substr(0, ipv6_tag.size()), ipv6_tag)) {
    return is_ipv6_literal(inside.substr(ipv6_tag.size()));
  }
  return is_ipv4_literal(inside);
}

bool parse_domain(Cursor& in) {
  return in.peek() == '[' ? parse_address_literal(in) : parse_domain_name(in);
}

bool parse_dot_string(Cursor& in) {
  do {
    if (!is_atext(in.peek())) {
      return false;
    }
    while (is_atext(in.peek())) {
      in.advance();
    }
  } while (in.consume('.'));
  return true;
}

bool parse_quoted_string(Cursor& in) {
  if (!in.consume('"')) {
    return false;
  }
  while (!in.at_end()) {
    const unsigned char c = in.peek();
    if (c == '"') {
      in.advance();
      return true;
    }
    if (c == '\\') {
      in.advance();
      if (in.peek() < 32 || in.peek() > 126) {
        return false;
      }
      in.advance();
    } else if (is_qtext(c)) {
      in.advance();
    } else {
      return false;
    }
  }
  return false;
}

// A-d-l = At-domain *( "," At-domain ) ":"
bool parse_source_route(Cursor& in) {
  do {
    if (!in.consume('@') || !parse_domain(in)) {
      return false;
    }
  } while (in.consume(','));
  return in.consume(':');
}

}  // namespace

tl::expected<ParsedPath, PathError> parse_path(std::string_view text, PathKind kind) {
  Cursor in(text);
  if (!in.consume('<')) {
    return tl::make_unexpected(PathError::syntax);
  }
  if (in.consume('>')) {
    if (kind != PathKind::reverse) {
      return tl::make_unexpected(PathError::syntax);
    }
    return ParsedPath{Path{}, in.pos()};
  }
  if (in.peek() == '@' && !parse_source_route(in)) {
    return tl::make_unexpected(PathError::syntax);
  }

  const std::size_t local_start = in.pos();
  const bool quoted = in.peek() == '"';
  if (!(quoted ? parse_quoted_string(in) : parse_dot_string(in))) {
    return tl::make_unexpected(PathError::syntax);
  }
  const std::string_view local_part = in.since(local_start);

  std::string_view domain;
  if (in.consume('@')) {
    const std::size_t domain_start = in.pos();
    if (!parse_domain(in)) {
      return tl::make_unexpected(PathError::syntax);
    }
    domain = in.since(domain_start);
  } else if (!(kind == PathKind::forward && !quoted && iequals(local_part, "postmaster") &&
               local_start == 1)) {
    return tl::make_unexpected(PathError::syntax);
  }
  if (!in.consume('>')) {
    return tl::make_unexpected(PathError::syntax);
  }

  const std::string_view whole = text.substr(0, in.pos());
  if (local_part.size() > max_local_part_length || domain.size() > max_domain_length ||
      whole.size() > max_path_length) {
    return tl::make_unexpected(PathError::too_long);
  }
  ParsedPath parsed;
  parsed.length = in.pos();
  for (unsigned char c : whole) {
    if (is_non_ascii(c)) {
      parsed.path.non_ascii = true;
      break;
    }
  }
  if (parsed.path.non_ascii && !is_valid_utf8(whole)) {
    return tl::make_unexpected(PathError::invalid_utf8);
  }
  parsed.path.address = std::string(local_part);
  if (!domain.empty()) {
    parsed.path.address += '@';
    parsed.path.address += domain;
  }
  return parsed;
}

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) {
        low = 0xA0;  // overlong
      } else if (c == 0xED) {
        high = 0x9F;  // surrogates
      }
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) {
        low = 0x90;  // overlong
      } else if (c == 0xF4) {
        high = 0x8F;  // above U+10FFFF
      }
    } else {
      return false;
    }
    if (i + length > text.size()) {
      return false;
    }
    for (std::size_t k = 1; k < length; ++k) {
      const auto continuation = static_cast<unsigned char>(text[i + k]);
      const unsigned char min = k == 1 ? low : 0x80;
      const unsigned char max = k == 1 ? high : 0xBF;
      if (continuation < min || continuation > max) {
        return false;
      }
    }
    i += length;
  }
  return true;
}

}  // namespace stsrelay::smtp
