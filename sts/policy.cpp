#include "sts/policy.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "sts/mx_pattern.hpp"
#include "sts/quoted.hpp"

namespace stsrelay::sts {

namespace {

constexpr std::array<std::pair<Mode, std::string_view>, 3> mode_names{{
    {Mode::enforce, "enforce"},
    {Mode::testing, "testing"},
    {Mode::none, "none"},
}};

constexpr std::string_view version_value = "STSv1";
constexpr std::size_t max_age_max_digits = 10;
constexpr std::uint64_t max_age_limit = 31557600;  // §3.2: about a year
constexpr std::size_t max_key_length = 32;
constexpr std::size_t max_quoted_length = 120;

bool is_alnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim_wsp(std::string_view text) {
  while (!text.empty() && is_wsp(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_wsp(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

std::string quoted(std::string_view text) {
  return sts::quoted(text, max_quoted_length);
}

// sts-policy-ext-name; the known keys are spelled within it.
bool is_key(std::string_view key) {
  if (key.empty() || key.size() > max_key_length || !is_alnum(key.front())) {
    return false;
  }
  return std::ranges::all_of(
      key, [](char c) { return is_alnum(c) || c == '_' || c == '-' || c == '.'; });
}

struct Line {
  std::size_t number = 0;  // from 1, for details
  std::string_view text;   // without its end
};

// The line's text, less its LF or CRLF.
std::vector<Line> split_lines(std::string_view text) {
  std::vector<Line> lines;
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.ends_with('\r')) {
      line.remove_suffix(1);
    }
    lines.push_back({number, line});
  }
  return lines;
}

tl::unexpected<PolicyProblem> problem(std::string rule, std::string detail) {
  return tl::unexpected(PolicyProblem{std::move(rule), std::move(detail)});
}

std::string where(const Line& line) {
  return "line " + std::to_string(line.number) + " " + quoted(line.text);
}

}  // namespace

std::string_view to_string(Mode mode) {
  for (const auto& [value, name] : mode_names) {
    if (value == mode) {
      return name;
    }
  }
  return "unknown";
}

std::optional<Mode> mode_from_string(std::string_view text) {
  for (const auto& [value, name] : mode_names) {
    if (name == text) {
      return value;
    }
  }
  return std::nullopt;
}

tl::expected<Policy, PolicyProblem> parse_policy(std::string_view text) {
  Policy policy;
  bool seen_version = false;
  bool seen_mode = false;
  bool seen_max_age = false;
  for (const Line& line : split_lines(text)) {
    if (trim_wsp(line.text).empty()) {
      continue;
    }
    const std::size_t colon = line.text.find(':');
    if (colon == std::string_view::npos) {
      return problem("line-malformed", where(line) + " is not \"key: value\"");
    }
    const std::string_view key = line.text.substr(0, colon);
    if (!is_key(key)) {
      return problem("key-invalid", where(line) + ": " + quoted(key) +
                                        " is not a field name (letters, digits, \"_\", \"-\", "
                                        "\".\"; no spaces before \":\")");
    }
    const std::string_view value = trim_wsp(line.text.substr(colon + 1));
    if (key == "version") {
      if (std::exchange(seen_version, true)) {
        continue;
      }
      if (value != version_value) {
        return problem("version-invalid", where(line) + ": version must be STSv1");
      }
    } else if (key == "mode") {
      if (std::exchange(seen_mode, true)) {
        continue;
      }
      const auto mode = mode_from_string(value);
      if (!mode) {
        return problem("mode-invalid",
                       where(line) + ": mode must be enforce, testing or none (lower case)");
      }
      policy.mode = *mode;
    } else if (key == "max_age") {
      if (std::exchange(seen_max_age, true)) {
        continue;
      }
      if (value.empty() || value.size() > max_age_max_digits ||
          !std::ranges::all_of(value, is_digit)) {
        return problem("max_age-invalid", where(line) + ": max_age must be 1 to 10 digits");
      }
      std::uint64_t seconds = 0;
      for (const char digit : value) {
        seconds = seconds * 10 + static_cast<std::uint64_t>(digit - '0');
      }
      if (seconds > max_age_limit) {
        return problem("max_age-out-of-range",
                       where(line) + ": max_age must be at most 31557600 seconds");
      }
      policy.max_age = std::chrono::seconds(seconds);
    } else if (key == "mx") {
      if (!is_valid_mx_pattern(value)) {
        return problem("mx-invalid", where(line) +
                                         ": mx must be a host name or \"*.\" and a domain "
                                         "(letters, digits, hyphens)");
      }
      policy.mx.emplace_back(value);
    }
  }
  if (!seen_version) {
    return problem("version-missing", "no \"version: STSv1\" line");
  }
  if (!seen_mode) {
    return problem("mode-missing", "no \"mode\" line");
  }
  if (!seen_max_age) {
    return problem("max_age-missing", "no \"max_age\" line");
  }
  if (policy.mx.empty() && policy.mode != Mode::none) {
    return problem("mx-missing",
                   "no \"mx\" line, required in mode " + std::string(to_string(policy.mode)));
  }
  return policy;
}

std::string format_policy(const Policy& policy) {
  std::string text = "version: STSv1\r\nmode: ";
  text += to_string(policy.mode);
  text += "\r\n";
  for (const auto& pattern : policy.mx) {
    text += "mx: ";
    text += pattern;
    text += "\r\n";
  }
  text += "max_age: ";
  text += std::to_string(policy.max_age.count());
  text += "\r\n";
  return text;
}

}  // namespace stsrelay::sts
