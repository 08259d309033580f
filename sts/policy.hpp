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
// Exact and case-sensitive, as the ABNF (%s"enforce"): "Enforce" is no mode.
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

// The rules, as PolicyProblem::rule names them:
//   line-malformed        a line without ":"
//   key-invalid           a key that is no sts-policy-ext-name (letters,
//                         digits, "_", "-", "."; 1-32 long, beginning with a
//                         letter or digit): also a space before ":" or at the
//                         start of the line
//   version-missing       no "version" line
//   version-invalid       the first "version" is not exactly "STSv1"
//   mode-missing          no "mode" line
//   mode-invalid          the first "mode" is not exactly enforce, testing or none
//   max_age-missing       no "max_age" line
//   max_age-invalid       the first "max_age" is not 1 to 10 digits
//   max_age-out-of-range  the first "max_age" is above 31557600
//   mx-missing            no "mx" line and the mode is enforce or testing
//   mx-invalid            an "mx" that is not ["*."] Domain (see is_valid_mx_pattern)
//
// How the text is read:
// - Lines end in LF or CRLF, mixed freely; the last may lack its end.
// - Keys and the fixed values are case-sensitive (%s"mode"): "Mode: enforce"
//   is an unknown key, ignored, and then mode is missing.
// - ":" may be followed by spaces and tabs; a line may end in spaces and
//   tabs (the ABNF's *WSP after each field).
// - Lines that are empty or only spaces and tabs are ignored (the ABNF has
//   none; servers emit them, and they carry nothing).
// - A field other than "mx" that repeats keeps its first value: the first
//   occurrence is the one checked and used; later ones are ignored entirely,
//   whatever their value (their line must still be "key: value").
// - Unknown keys are ignored, and so are their values, unchecked.
// - mode none needs no mx (§8.3: how a domain withdraws its policy).
tl::expected<Policy, PolicyProblem> parse_policy(std::string_view text);

// The policy as the text parse_policy reads back (for the cache file and sts-check).
std::string format_policy(const Policy& policy);

}  // namespace stsrelay::sts
