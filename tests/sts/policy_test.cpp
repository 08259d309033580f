#include "sts/policy.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::sts {
namespace {

using std::chrono::seconds;
using namespace std::string_literals;

struct PolicyCase {
  std::string name;
  std::string text;
  std::string rule;  // empty when parsing succeeds
  Policy expected = {};
};

PolicyCase ok(std::string name, std::string text, Policy expected) {
  return {std::move(name), std::move(text), "", std::move(expected)};
}

PolicyCase fails(std::string name, std::string text, std::string rule) {
  return {std::move(name), std::move(text), std::move(rule)};
}

Policy enforce(std::vector<std::string> mx, int max_age = 86400) {
  return {Mode::enforce, seconds(max_age), std::move(mx)};
}

class PolicyTable : public ::testing::TestWithParam<PolicyCase> {};

TEST_P(PolicyTable, Parses) {
  const PolicyCase& c = GetParam();
  const auto parsed = parse_policy(c.text);
  if (c.rule.empty()) {
    ASSERT_TRUE(parsed) << parsed.error().rule << ": " << parsed.error().detail;
    EXPECT_EQ(to_string(parsed->mode), to_string(c.expected.mode));
    EXPECT_EQ(parsed->max_age.count(), c.expected.max_age.count());
    EXPECT_EQ(parsed->mx, c.expected.mx);
  } else {
    ASSERT_FALSE(parsed) << "accepted";
    EXPECT_EQ(parsed.error().rule, c.rule) << parsed.error().detail;
    EXPECT_FALSE(parsed.error().detail.empty());
  }
}

// A valid enforce policy, to which cases add or from which they change a line.
const std::string base = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n";

INSTANTIATE_TEST_SUITE_P(
    Rfc8461Section3_2, PolicyTable,
    ::testing::Values(
        // Real policies, as served.
        ok("Google",
           "version: STSv1\nmode: enforce\nmx: smtp.google.com\nmx: aspmx.l.google.com\n"
           "mx: *.aspmx.l.google.com\nmax_age: 86400\n",
           enforce({"smtp.google.com", "aspmx.l.google.com", "*.aspmx.l.google.com"})),
        ok("Rfc8461Example",
           "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
           "mx: backupmx.example.com\r\nmax_age: 604800\r\n",
           enforce({"mail.example.com", "*.example.net", "backupmx.example.com"}, 604800)),
        ok("Outlook",
           "version: STSv1\r\nmode: enforce\r\nmx: *.mail.protection.outlook.com\r\n"
           "max_age: 604800\r\n",
           enforce({"*.mail.protection.outlook.com"}, 604800)),
        ok("Testing", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 3600\n",
           {Mode::testing, seconds(3600), {"mx.example.com"}}),
        // §8.3: a domain withdraws with mode none, mx optional.
        ok("NoneWithoutMx", "version: STSv1\nmode: none\nmax_age: 86400\n",
           {Mode::none, seconds(86400), {}}),
        ok("NoneWithMx", "version: STSv1\nmode: none\nmx: mx.example.com\nmax_age: 1\n",
           {Mode::none, seconds(1), {"mx.example.com"}}),
        // Line ends and whitespace.
        ok("LfOnly", base, enforce({"mx.example.com"})),
        ok("CrlfOnly",
           "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n",
           enforce({"mx.example.com"})),
        ok("MixedLineEnds", "version: STSv1\r\nmode: enforce\nmx: mx.example.com\r\nmax_age: 86400",
           enforce({"mx.example.com"})),
        ok("NoFinalLineEnd", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400",
           enforce({"mx.example.com"})),
        ok("FinalBareCr", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\r",
           enforce({"mx.example.com"})),
        ok("NoSpaceAfterColon", "version:STSv1\nmode:enforce\nmx:mx.example.com\nmax_age:86400\n",
           enforce({"mx.example.com"})),
        ok("SpacesAndTabsAfterColon",
           "version:  STSv1\nmode:\tenforce\nmx: \t mx.example.com\nmax_age:   86400\n",
           enforce({"mx.example.com"})),
        ok("TrailingWhitespace",
           "version: STSv1 \r\nmode: enforce\t\r\nmx: mx.example.com  \nmax_age: 86400 \t\n",
           enforce({"mx.example.com"})),
        ok("EmptyLinesIgnored",
           "\nversion: STSv1\n\nmode: enforce\r\n\r\nmx: mx.example.com\n\nmax_age: 86400\n\n\n",
           enforce({"mx.example.com"})),
        ok("WhitespaceOnlyLinesIgnored",
           "version: STSv1\n  \nmode: enforce\n\t\r\nmx: mx.example.com\nmax_age: 86400\n",
           enforce({"mx.example.com"})),
        ok("AnyFieldOrder", "max_age: 86400\nmx: mx.example.com\nmode: enforce\nversion: STSv1\n",
           enforce({"mx.example.com"})),
        // Unknown keys are ignored, whatever their value.
        ok("UnknownKeys",
           base + "x-note: hello world\nfoo.bar_baz-1: \xc3\xa9t\xc3\xa9\nempty:\nodd: a:b:c\n",
           enforce({"mx.example.com"})),
        ok("KnownKeysAreCaseSensitiveSoIgnored",
           base + "MODE: testing\nMx: other.example.com\nVersion: STSv2\nMAX_AGE: x\n",
           enforce({"mx.example.com"})),
        // A repeated field keeps its first value; later ones are ignored entirely.
        ok("RepeatedModeFirstWins", base + "mode: testing\n", enforce({"mx.example.com"})),
        ok("RepeatedModeLaterInvalidIgnored", base + "mode: bogus\n", enforce({"mx.example.com"})),
        ok("RepeatedMaxAgeFirstWins", base + "max_age: 5\n", enforce({"mx.example.com"})),
        ok("RepeatedMaxAgeLaterInvalidIgnored", base + "max_age: 99999999999\n",
           enforce({"mx.example.com"})),
        ok("RepeatedVersionLaterInvalidIgnored", base + "version: STSv2\n",
           enforce({"mx.example.com"})),
        ok("RepeatedNoneDoesNotDropMxRequirement",
           "version: STSv1\nmode: testing\nmode: none\nmx: a.example.com\nmax_age: 60\n",
           {Mode::testing, seconds(60), {"a.example.com"}}),
        // mx accumulates, in order, duplicates kept.
        ok("ManyMx",
           "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 60\nmx: *.b.example.com\n"
           "mx: a.example.com\n",
           enforce({"a.example.com", "*.b.example.com", "a.example.com"}, 60)),
        ok("MxKeptAsWritten", "version: STSv1\nmode: enforce\nmx: MX.Example.COM.\nmax_age: 60\n",
           enforce({"MX.Example.COM."}, 60)),
        ok("MxSingleLabel", "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 60\n",
           enforce({"localhost"}, 60)),
        ok("MxPunycode", "version: STSv1\nmode: enforce\nmx: xn--bcher-kva.example\nmax_age: 60\n",
           enforce({"xn--bcher-kva.example"}, 60)),
        // max_age bounds.
        ok("MaxAgeZero", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 0\n",
           enforce({"a.example.com"}, 0)),
        ok("MaxAgeLimit", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 31557600\n",
           enforce({"a.example.com"}, 31557600)),
        ok("MaxAgeLeadingZeros",
           "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 0000086400\n",
           enforce({"a.example.com"}, 86400)),
        // Missing fields.
        fails("Empty", "", "version-missing"),
        fails("OnlyEmptyLines", "\n\r\n\n", "version-missing"),
        fails("NoVersion", "mode: enforce\nmx: mx.example.com\nmax_age: 86400\n",
              "version-missing"),
        fails("NoMode", "version: STSv1\nmx: mx.example.com\nmax_age: 86400\n", "mode-missing"),
        fails("NoMaxAge", "version: STSv1\nmode: enforce\nmx: mx.example.com\n", "max_age-missing"),
        fails("EnforceWithoutMx", "version: STSv1\nmode: enforce\nmax_age: 86400\n", "mx-missing"),
        fails("TestingWithoutMx", "version: STSv1\nmode: testing\nmax_age: 86400\n", "mx-missing"),
        fails("UpperCaseMxIsNoMx", "version: STSv1\nmode: enforce\nMX: a.example.com\nmax_age: 1\n",
              "mx-missing"),
        fails("UpperCaseVersionIsNoVersion",
              "VERSION: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n", "version-missing"),
        // Invalid values.
        fails("VersionOther", "version: STSv2\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "version-invalid"),
        fails("VersionLowerCase", "version: stsv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "version-invalid"),
        fails("VersionEmpty", "version:\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "version-invalid"),
        fails("FirstVersionInvalid",
              "version: STSv2\nversion: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "version-invalid"),
        fails("ModeCapitalised", "version: STSv1\nmode: Enforce\nmx: a.example.com\nmax_age: 1\n",
              "mode-invalid"),
        fails("ModeUnknown", "version: STSv1\nmode: reject\nmx: a.example.com\nmax_age: 1\n",
              "mode-invalid"),
        fails("ModeEmpty", "version: STSv1\nmode:\nmx: a.example.com\nmax_age: 1\n",
              "mode-invalid"),
        fails("ModeTwoWords",
              "version: STSv1\nmode: enforce testing\nmx: a.example.com\nmax_age: 1\n",
              "mode-invalid"),
        fails("FirstModeInvalid",
              "version: STSv1\nmode: bogus\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "mode-invalid"),
        fails("ModeWithBareCrInside",
              "version: STSv1\nmode: enforce\r\r\nmx: a.example.com\nmax_age: 1\n", "mode-invalid"),
        fails("MaxAgeAboveLimit",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 31557601\n",
              "max_age-out-of-range"),
        fails("MaxAgeTenDigitsTooBig",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 9999999999\n",
              "max_age-out-of-range"),
        fails("MaxAgeElevenDigits",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 00000086400\n",
              "max_age-invalid"),
        fails(
            "MaxAgeHuge",
            "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 99999999999999999999999\n",
            "max_age-invalid"),
        fails("MaxAgeNegative", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: -1\n",
              "max_age-invalid"),
        fails("MaxAgePlus", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: +60\n",
              "max_age-invalid"),
        fails("MaxAgeNonNumeric",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: one day\n",
              "max_age-invalid"),
        fails("MaxAgeHex", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 0x10\n",
              "max_age-invalid"),
        fails("MaxAgeFraction", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1.5\n",
              "max_age-invalid"),
        fails("MaxAgeEmpty", "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age:\n",
              "max_age-invalid"),
        fails("MaxAgeInnerSpace",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 86 400\n",
              "max_age-invalid"),
        fails("FirstMaxAgeInvalid",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: x\nmax_age: 60\n",
              "max_age-invalid"),
        // mx patterns.
        fails("MxEmpty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n", "mx-invalid"),
        fails("MxWildcardInside",
              "version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 1\n", "mx-invalid"),
        fails("MxBareWildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", "mx-invalid"),
        fails("MxWildcardNoDot", "version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxDoubleWildcard",
              "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1\n", "mx-invalid"),
        fails("MxUnderscore", "version: STSv1\nmode: enforce\nmx: mx_1.example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxTwoPatterns",
              "version: STSv1\nmode: enforce\nmx: a.example.com b.example.com\n"
              "max_age: 1\n",
              "mx-invalid"),
        fails("MxCommaList",
              "version: STSv1\nmode: enforce\nmx: a.example.com,b.example.com\n"
              "max_age: 1\n",
              "mx-invalid"),
        fails("MxEmptyLabel", "version: STSv1\nmode: enforce\nmx: a..example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxLeadingDot", "version: STSv1\nmode: enforce\nmx: .example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxTwoTrailingDots",
              "version: STSv1\nmode: enforce\nmx: a.example.com..\nmax_age: 1\n", "mx-invalid"),
        fails("MxHyphenEdge", "version: STSv1\nmode: enforce\nmx: -a.example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxUtf8",
              "version: STSv1\nmode: enforce\nmx: b\xc3\xbc"
              "cher.example\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxPort", "version: STSv1\nmode: enforce\nmx: a.example.com:25\nmax_age: 1\n",
              "mx-invalid"),
        fails("MxUrl", "version: STSv1\nmode: enforce\nmx: smtp://a.example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("OneBadMxAmongGood",
              "version: STSv1\nmode: enforce\nmx: a.example.com\nmx: b..example.com\nmax_age: 1\n",
              "mx-invalid"),
        fails("BadMxInModeNone", "version: STSv1\nmode: none\nmx: not valid\nmax_age: 1\n",
              "mx-invalid"),
        // Lines that are not "key: value".
        fails("NoColon", base + "just text\n", "line-malformed"),
        fails("EqualsInsteadOfColon",
              "version=STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n", "line-malformed"),
        fails("SpaceBeforeColon", "version : STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "key-invalid"),
        fails("LeadingSpace", base + " mode: enforce\n", "key-invalid"),
        fails("EmptyKey", base + ": value\n", "key-invalid"),
        fails("KeyBeginsWithUnderscore", base + "_x: y\n", "key-invalid"),
        fails("KeyTooLong", base + std::string(33, 'k') + ": y\n", "key-invalid"),
        fails("HtmlInsteadOfPolicy", "<html>\n<body>Not found</body>\n</html>\n", "line-malformed"),
        fails("TxtRecordInsteadOfPolicy", "v=STSv1; id=20190429T010101;\n", "line-malformed"),
        fails("Utf8Bom",
              "\xef\xbb\xbfversion: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
              "key-invalid")),
    [](const auto& info) { return info.param.name; });

TEST(Policy, ModeNames) {
  for (const Mode mode : {Mode::enforce, Mode::testing, Mode::none}) {
    EXPECT_EQ(mode_from_string(to_string(mode)), mode);
  }
  EXPECT_EQ(to_string(Mode::enforce), "enforce");
  EXPECT_EQ(to_string(Mode::testing), "testing");
  EXPECT_EQ(to_string(Mode::none), "none");
  EXPECT_EQ(mode_from_string("Enforce"), std::nullopt);
  EXPECT_EQ(mode_from_string("NONE"), std::nullopt);
  EXPECT_EQ(mode_from_string(""), std::nullopt);
  EXPECT_EQ(mode_from_string(" enforce"), std::nullopt);
}

TEST(Policy, DetailQuotesTheLine) {
  const auto parsed =
      parse_policy("version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: forever\n");
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().detail.find("line 4"), std::string::npos) << parsed.error().detail;
  EXPECT_NE(parsed.error().detail.find("max_age: forever"), std::string::npos)
      << parsed.error().detail;
}

TEST(Policy, DetailEscapesUnprintableBytes) {
  const auto parsed = parse_policy("version: STSv1\nmode: \x00\x1b\n"s);
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().rule, "mode-invalid");
  EXPECT_NE(parsed.error().detail.find("\\x00\\x1b"), std::string::npos) << parsed.error().detail;
}

TEST(Policy, FormatIsCrlfInFieldOrder) {
  const Policy policy{Mode::testing, seconds(604800), {"mail.example.com", "*.example.net"}};
  EXPECT_EQ(format_policy(policy),
            "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
            "max_age: 604800\r\n");
}

TEST(Policy, FormatReadsBackEqual) {
  const std::vector<Policy> policies{
      {Mode::enforce, seconds(86400), {"smtp.google.com", "*.aspmx.l.google.com"}},
      {Mode::testing, seconds(0), {"a.example.com", "a.example.com"}},
      {Mode::none, seconds(31557600), {}},
      {Mode::none, seconds(1), {"MX.Example.COM."}},
  };
  for (const Policy& policy : policies) {
    const std::string text = format_policy(policy);
    const auto parsed = parse_policy(text);
    ASSERT_TRUE(parsed) << text << parsed.error().rule << ": " << parsed.error().detail;
    EXPECT_EQ(*parsed, policy) << text;
  }
}

TEST(Policy, ParsedPolicyFormatsAndReadsBackEqual) {
  const std::string served =
      "version: STSv1\nmode: enforce\nmx: smtp.google.com\nmx: aspmx.l.google.com\n"
      "mx: *.aspmx.l.google.com\nmax_age: 86400\nx-extra: ignored\nmode: none\n";
  const auto parsed = parse_policy(served);
  ASSERT_TRUE(parsed);
  const auto again = parse_policy(format_policy(*parsed));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *parsed);
}

}  // namespace
}  // namespace stsrelay::sts
