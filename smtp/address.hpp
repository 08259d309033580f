#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace stsrelay::smtp {

// RFC 5321 §4.5.3.1 size limits, in octets.
inline constexpr std::size_t max_local_part_length = 64;
inline constexpr std::size_t max_domain_length = 255;
inline constexpr std::size_t max_path_length = 256;  // including "<" and ">"

// A reverse-path may be the null path <>; a forward-path may be <postmaster>
// without a domain (RFC 5321 §4.1.1.3).
enum class PathKind { reverse, forward };

enum class PathError {
  syntax,
  too_long,      // a local part, domain or whole path over the §4.5.3.1 limits
  invalid_utf8,  // non-ASCII octets that are not well-formed UTF-8
};

struct Path {
  // "local@domain" with the local part exactly as sent (quotes kept) and any
  // source route dropped; empty for <>; "postmaster" (as sent) for <postmaster>.
  std::string address;
  // The path holds UTF-8 (RFC 6531), allowed only in a SMTPUTF8 transaction.
  bool non_ascii = false;
};

struct ParsedPath {
  Path path;
  std::size_t length = 0;  // octets of text taken by "<...>"
};

// Parses the path at the start of text, which must begin with '<'; what
// follows the closing '>' is left to the caller (ESMTP parameters).
tl::expected<ParsedPath, PathError> parse_path(std::string_view text, PathKind kind);

// Well-formed UTF-8 per RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF.
bool is_valid_utf8(std::string_view text);

}  // namespace stsrelay::smtp
