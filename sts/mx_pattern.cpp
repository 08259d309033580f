#include "sts/mx_pattern.hpp"

#include <algorithm>
#include <cstddef>

namespace stsrelay::sts {

namespace {

constexpr std::string_view wildcard_prefix = "*.";
constexpr std::size_t max_label_length = 63;
constexpr std::size_t max_name_length = 253;  // without the trailing dot

bool is_alnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

std::string_view without_trailing_dot(std::string_view name) {
  if (name.ends_with('.')) {
    name.remove_suffix(1);
  }
  return name;
}

// RFC 5321 sub-domain = Let-dig [Ldh-str], at most 63 characters.
bool is_ldh_label(std::string_view label) {
  if (label.empty() || label.size() > max_label_length || !is_alnum(label.front()) ||
      !is_alnum(label.back())) {
    return false;
  }
  return std::ranges::all_of(label, [](char c) { return is_alnum(c) || c == '-'; });
}

// RFC 5321 Domain, without a trailing dot.
bool is_ldh_name(std::string_view name) {
  if (name.empty() || name.size() > max_name_length) {
    return false;
  }
  while (true) {
    const std::size_t dot = name.find('.');
    if (!is_ldh_label(name.substr(0, dot))) {
      return false;
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    name.remove_prefix(dot + 1);
  }
}

}  // namespace

bool is_valid_mx_pattern(std::string_view pattern) {
  pattern = without_trailing_dot(pattern);
  if (pattern.starts_with(wildcard_prefix)) {
    pattern.remove_prefix(wildcard_prefix.size());
  }
  return is_ldh_name(pattern);
}

bool mx_pattern_matches(std::string_view pattern, std::string_view host) {
  if (!is_valid_mx_pattern(pattern)) {
    return false;
  }
  pattern = without_trailing_dot(pattern);
  host = without_trailing_dot(host);
  if (host.empty()) {
    return false;
  }
  if (!pattern.starts_with(wildcard_prefix)) {
    return equal_ignoring_case(pattern, host);
  }
  // "*.example.com": the host is one valid label, then ".example.com".
  const std::string_view suffix = pattern.substr(1);
  if (host.size() <= suffix.size()) {
    return false;
  }
  const std::string_view first_label = host.substr(0, host.size() - suffix.size());
  return is_ldh_label(first_label) && equal_ignoring_case(host.substr(first_label.size()), suffix);
}

bool policy_lists_mx(const Policy& policy, std::string_view host) {
  return std::ranges::any_of(
      policy.mx, [host](const std::string& pattern) { return mx_pattern_matches(pattern, host); });
}

}  // namespace stsrelay::sts
