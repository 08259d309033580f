#include "sts/mx_pattern.hpp"

#include <chrono>
#include <string>

#include <gtest/gtest.h>

namespace stsrelay::sts {
namespace {

struct MatchCase {
  std::string pattern;
  std::string host;
  bool matches;
};

class MatchTable : public ::testing::TestWithParam<MatchCase> {};

TEST_P(MatchTable, Matches) {
  const MatchCase& c = GetParam();
  EXPECT_EQ(mx_pattern_matches(c.pattern, c.host), c.matches)
      << "pattern \"" << c.pattern << "\" host \"" << c.host << "\"";
}

INSTANTIATE_TEST_SUITE_P(
    Rfc8461Section4_1, MatchTable,
    ::testing::Values(
        // Exact patterns.
        MatchCase{"mx.example.com", "mx.example.com", true},
        MatchCase{"mx.example.com", "mx2.example.com", false},
        MatchCase{"mx.example.com", "example.com", false},
        MatchCase{"mx.example.com", "a.mx.example.com", false},
        MatchCase{"mx.example.com", "mx.example.co", false},
        MatchCase{"mx.example.com", "mx.example.com.evil.test", false},
        MatchCase{"mx.example.com", "xmx.example.com", false},
        // ASCII case-insensitive, both ways.
        MatchCase{"MX.Example.COM", "mx.example.com", true},
        MatchCase{"mx.example.com", "MX.EXAMPLE.COM", true},
        MatchCase{"*.Example.Net", "MX1.example.NET", true},
        // A trailing dot on either side is ignored.
        MatchCase{"mx.example.com.", "mx.example.com", true},
        MatchCase{"mx.example.com", "mx.example.com.", true},
        MatchCase{"mx.example.com.", "mx.example.com.", true},
        MatchCase{"*.example.com.", "mx1.example.com", true},
        MatchCase{"*.example.com", "mx1.example.com.", true},
        MatchCase{"mx.example.com", "mx.example.com..", false},
        // "*." is exactly one leftmost label.
        MatchCase{"*.example.com", "mx1.example.com", true},
        MatchCase{"*.example.com", "a-b.example.com", true},
        MatchCase{"*.example.com", "1.example.com", true},
        MatchCase{"*.example.com", "example.com", false},
        MatchCase{"*.example.com", "a.b.example.com", false},
        MatchCase{"*.example.com", ".example.com", false},
        MatchCase{"*.example.com", "*.example.com", false},
        MatchCase{"*.example.com", "mx1.example.net", false},
        MatchCase{"*.example.com", "mx1example.com", false},
        MatchCase{"*.example.com", "mx1.notexample.com", false},
        MatchCase{"*.example.com", "-x.example.com", false},
        MatchCase{"*.aspmx.l.google.com", "alt1.aspmx.l.google.com", true},
        MatchCase{"*.aspmx.l.google.com", "aspmx.l.google.com", false},
        MatchCase{"*.com", "example.com", true}, MatchCase{"*.com", "mx.example.com", false},
        // "*" anywhere else is no wildcard: such patterns match nothing.
        MatchCase{"mx.*.example.com", "mx.a.example.com", false},
        MatchCase{"mx.*.example.com", "mx.*.example.com", false},
        MatchCase{"*mx.example.com", "amx.example.com", false},
        MatchCase{"*", "example.com", false}, MatchCase{"*", "*", false},
        MatchCase{"*.", "example", false}, MatchCase{"*.*.example.com", "a.b.example.com", false},
        MatchCase{"**.example.com", "a.example.com", false},
        MatchCase{"example.*", "example.com", false},
        // Empty or invalid on either side.
        MatchCase{"mx.example.com", "", false}, MatchCase{"mx.example.com", ".", false},
        MatchCase{"", "", false}, MatchCase{"", "mx.example.com", false},
        MatchCase{".", ".", false}, MatchCase{"*.example.com", "", false},
        MatchCase{"mx..example.com", "mx..example.com", false}));

struct ValidityCase {
  std::string pattern;
  bool valid;
};

class ValidityTable : public ::testing::TestWithParam<ValidityCase> {};

TEST_P(ValidityTable, Validates) {
  EXPECT_EQ(is_valid_mx_pattern(GetParam().pattern), GetParam().valid)
      << "\"" << GetParam().pattern << "\"";
}

const std::string label63(63, 'a');
const std::string label64(64, 'a');
// 4 labels of 63 and the dots: 255; three of 63 and one of 61: 253.
const std::string name253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'a');
const std::string name254 = label63 + "." + label63 + "." + label63 + "." + std::string(62, 'a');

INSTANTIATE_TEST_SUITE_P(
    Rfc8461Section3_2, ValidityTable,
    ::testing::Values(ValidityCase{"mx.example.com", true}, ValidityCase{"*.example.com", true},
                      ValidityCase{"mx.example.com.", true}, ValidityCase{"*.example.com.", true},
                      ValidityCase{"localhost", true}, ValidityCase{"*.com", true},
                      ValidityCase{"a-b.example", true}, ValidityCase{"a--b.example", true},
                      ValidityCase{"123.example", true},
                      ValidityCase{"xn--bcher-kva.example", true},
                      ValidityCase{label63 + ".example", true},
                      ValidityCase{label64 + ".example", false}, ValidityCase{name253, true},
                      ValidityCase{name253 + ".", true}, ValidityCase{name254, false},
                      ValidityCase{"", false}, ValidityCase{".", false}, ValidityCase{"*", false},
                      ValidityCase{"*.", false}, ValidityCase{"*.*.example.com", false},
                      ValidityCase{"mx.*.example.com", false}, ValidityCase{"*example.com", false},
                      ValidityCase{".example.com", false}, ValidityCase{"a..example.com", false},
                      ValidityCase{"a.example.com..", false}, ValidityCase{"-a.example", false},
                      ValidityCase{"a-.example", false}, ValidityCase{"a_b.example", false},
                      ValidityCase{"a b.example", false}, ValidityCase{" a.example", false},
                      ValidityCase{"a.example:25", false}, ValidityCase{"[192.0.2.1]", false},
                      ValidityCase{"b\xc3\xbc"
                                   "cher.example",
                                   false}));

TEST(MxPattern, PolicyListsMxWhenAnyPatternMatches) {
  const Policy policy{
      Mode::enforce, std::chrono::seconds(86400), {"mail.example.com", "*.example.net"}};
  EXPECT_TRUE(policy_lists_mx(policy, "mail.example.com"));
  EXPECT_TRUE(policy_lists_mx(policy, "MX7.example.net."));
  EXPECT_FALSE(policy_lists_mx(policy, "example.net"));
  EXPECT_FALSE(policy_lists_mx(policy, "mx.mail.example.com"));
  EXPECT_FALSE(policy_lists_mx(policy, ""));
}

TEST(MxPattern, PolicyWithoutMxListsNothing) {
  const Policy policy{Mode::none, std::chrono::seconds(86400), {}};
  EXPECT_FALSE(policy_lists_mx(policy, "mail.example.com"));
}

}  // namespace
}  // namespace stsrelay::sts
