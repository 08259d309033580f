#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace stsrelay::sts {

enum class Mode { enforce, testing, none };
std::string_view to_string(Mode mode);
std::optional<Mode> mode_from_string(std::string_view text);

// A policy as served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.2).
struct Policy {
  Mode mode = Mode::none;
  std::chrono::seconds max_age{0};
  std::vector<std::string> mx;  // patterns as written ("mail.example.com", "*.example.net")
  bool operator==(const Policy&) const = default;
};

struct PolicyProblem {
  std::string rule;    // short and stable: "version-missing", "max_age-out-of-range", ...
  std::string detail;  // for people: what exactly is wrong, quoting the line
};

tl::expected<Policy, PolicyProblem> parse_policy(std::string_view text);

// The policy as the text parse_policy reads back (for the cache file and sts-check).
std::string format_policy(const Policy& policy);

}  // namespace stsrelay::sts
