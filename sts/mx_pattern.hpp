#pragma once

#include <string_view>

#include "sts/policy.hpp"

namespace stsrelay::sts {

// RFC 8461 §4.1: "*." matches exactly one leftmost label; comparison is
// ASCII case-insensitive and ignores a trailing dot; nothing else is a wildcard.
// An invalid pattern (see is_valid_mx_pattern) or an empty host matches
// nothing; so "*" anywhere but a leading "*." never matches a valid host.
bool mx_pattern_matches(std::string_view pattern, std::string_view host);

// Whether any mx pattern of the policy matches the host.
bool policy_lists_mx(const Policy& policy, std::string_view host);

// §3.2 sts-policy-mx-value = ["*."] Domain, Domain as in RFC 5321 (letters,
// digits and hyphens; labels begin and end with a letter or digit), labels of
// at most 63 and names of at most 253 characters. One trailing dot is
// accepted although the ABNF has none: matching ignores it anyway, and
// rejecting it would drop an enforce policy over a harmless spelling.
bool is_valid_mx_pattern(std::string_view pattern);

}  // namespace stsrelay::sts
