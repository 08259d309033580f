#pragma once

#include <cstdint>
#include <optional>

#include "smtp/reply.hpp"

namespace stsrelay::smtp {

// What a server's EHLO reply offers (RFC 5321 §4.1.1.1, keywords
// case-insensitive).
struct Capabilities {
  bool starttls = false;
  bool pipelining = false;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
  bool enhanced_status_codes = false;
  bool size = false;                        // SIZE offered (RFC 1870): MAIL may declare SIZE=n
  std::optional<std::uint64_t> size_limit;  // "SIZE n" with n > 0; SIZE 0 means no limit
};

// The first line is the server's greeting, not a keyword; unknown keywords
// are ignored; a reply other than 250 offers nothing.
Capabilities parse_capabilities(const Reply& ehlo_reply);

}  // namespace stsrelay::smtp
