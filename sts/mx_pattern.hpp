#pragma once

#include <string_view>

#include "sts/policy.hpp"

namespace stsrelay::sts {

// RFC 8461 §4.1: "*." matches exactly one leftmost label; comparison is
// ASCII case-insensitive and ignores a trailing dot; nothing else is a wildcard.
bool mx_pattern_matches(std::string_view pattern, std::string_view host);

// Whether any mx pattern of the policy matches the host.
bool policy_lists_mx(const Policy& policy, std::string_view host);

}  // namespace stsrelay::sts
