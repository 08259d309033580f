#include "smtp/address.hpp"

#include <string>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

struct PathCase {
  std::string text;
  PathKind kind;
  bool ok;
  std::string address;  // when ok
  PathError error = PathError::syntax;
};

class PathTable : public ::testing::TestWithParam<PathCase> {};

TEST_P(PathTable, Parses) {
  const PathCase& c = GetParam();
  const auto parsed = parse_path(c.text, c.kind);
  ASSERT_EQ(parsed.has_value(), c.ok) << c.text;
  if (c.ok) {
    EXPECT_EQ(parsed->path.address, c.address) << c.text;
    EXPECT_EQ(parsed->length, c.text.size()) << c.text;
  } else {
    EXPECT_EQ(parsed.error(), c.error) << c.text;
  }
}

const std::string local64(64, 'a');
const std::string label63(63, 'b');
// 63+1+63+1+63+1+63 = 255 octets
const std::string domain255 = label63 + "." + label63 + "." + label63 + "." + label63;

INSTANTIATE_TEST_SUITE_P(
    Rfc5321, PathTable,
    ::testing::Values(
        PathCase{"<user@example.com>", PathKind::forward, true, "user@example.com"},
        PathCase{"<First.Last@Example.COM>", PathKind::reverse, true, "First.Last@Example.COM"},
        PathCase{"<a!#$%&'*+-/=?^_`{|}~z@x.test>", PathKind::forward, true,
                 "a!#$%&'*+-/=?^_`{|}~z@x.test"},
        PathCase{"<>", PathKind::reverse, true, ""}, PathCase{"<>", PathKind::forward, false, ""},
        PathCase{"<postmaster>", PathKind::forward, true, "postmaster"},
        PathCase{"<PostMaster>", PathKind::forward, true, "PostMaster"},
        PathCase{"<postmaster>", PathKind::reverse, false, ""},
        PathCase{"<\"postmaster\">", PathKind::forward, false, ""},
        PathCase{"<user>", PathKind::forward, false, ""},
        PathCase{"<@relay1.test,@relay2.test:user@d.test>", PathKind::forward, true, "user@d.test"},
        PathCase{"<@relay1.test:user@d.test>", PathKind::reverse, true, "user@d.test"},
        PathCase{"<@relay1.test user@d.test>", PathKind::forward, false, ""},
        PathCase{"<@:user@d.test>", PathKind::forward, false, ""},
        PathCase{"<\"john doe\"@d.test>", PathKind::forward, true, "\"john doe\"@d.test"},
        PathCase{"<\"a\\\"b\"@d.test>", PathKind::forward, true, "\"a\\\"b\"@d.test"},
        PathCase{"<\"\"@d.test>", PathKind::forward, true, "\"\"@d.test"},
        PathCase{"<\"unterminated@d.test>", PathKind::forward, false, ""},
        PathCase{"<\"a\tb\"@d.test>", PathKind::forward, false, ""},
        PathCase{"<user@[192.0.2.1]>", PathKind::forward, true, "user@[192.0.2.1]"},
        PathCase{"<user@[256.0.2.1]>", PathKind::forward, false, ""},
        PathCase{"<user@[192.0.2]>", PathKind::forward, false, ""},
        PathCase{"<user@[192.0.2.1.5]>", PathKind::forward, false, ""},
        PathCase{"<user@[IPv6:2001:db8::1]>", PathKind::forward, true, "user@[IPv6:2001:db8::1]"},
        PathCase{"<user@[IPv6:::ffff:192.0.2.1]>", PathKind::forward, true,
                 "user@[IPv6:::ffff:192.0.2.1]"},
        PathCase{"<user@[IPv6:2001:db8::g]>", PathKind::forward, false, ""},
        PathCase{"<user@[2001:db8::1]>", PathKind::forward, false, ""},
        PathCase{"<user@[x-tag:abc]>", PathKind::forward, false, ""},
        PathCase{"<user@localhost>", PathKind::forward, true, "user@localhost"},
        PathCase{"<user@a-b.c1.test>", PathKind::forward, true, "user@a-b.c1.test"},
        PathCase{"<user@-a.test>", PathKind::forward, false, ""},
        PathCase{"<user@a-.test>", PathKind::forward, false, ""},
        PathCase{"<user@a..test>", PathKind::forward, false, ""},
        PathCase{"<user@a.test.>", PathKind::forward, false, ""},
        PathCase{"<user@>", PathKind::forward, false, ""},
        PathCase{"<@d.test>", PathKind::forward, false, ""},
        PathCase{"<.user@d.test>", PathKind::forward, false, ""},
        PathCase{"<user.@d.test>", PathKind::forward, false, ""},
        PathCase{"<us..er@d.test>", PathKind::forward, false, ""},
        PathCase{"<us er@d.test>", PathKind::forward, false, ""},
        PathCase{"<user@d.test", PathKind::forward, false, ""},
        PathCase{"user@d.test>", PathKind::forward, false, ""},
        PathCase{"<user@d_x.test>", PathKind::forward, false, ""},
        PathCase{"<" + local64 + "@d.test>", PathKind::forward, true, local64 + "@d.test"},
        PathCase{"<" + local64 + "a@d.test>", PathKind::forward, false, "", PathError::too_long},
        PathCase{"<u@" + domain255.substr(0, 250) + ">", PathKind::forward, true,
                 "u@" + domain255.substr(0, 250)},
        PathCase{"<u@" + domain255 + ">", PathKind::forward, false, "", PathError::too_long},
        PathCase{"<user@\xc3\xa9xample.test>", PathKind::forward, true, "user@\xc3\xa9xample.test"},
        PathCase{"<\xe7\x94\xa8\xe6\x88\xb7@d.test>", PathKind::forward, true,
                 "\xe7\x94\xa8\xe6\x88\xb7@d.test"},
        PathCase{"<\xc3@d.test>", PathKind::forward, false, "", PathError::invalid_utf8},
        PathCase{"<\xc0\xaf@d.test>", PathKind::forward, false, "", PathError::invalid_utf8},
        PathCase{"<\xed\xa0\x80@d.test>", PathKind::forward, false, "", PathError::invalid_utf8},
        PathCase{"<u@d\xff.test>", PathKind::forward, false, "", PathError::invalid_utf8}));

TEST(Path, PathLimitIs256OctetsWithBrackets) {
  // local 64 + "@" + domain: "<" + 64 + "@" + 189 + ">" = 256
  const std::string domain189 =
      std::string(63, 'c') + "." + std::string(63, 'c') + "." + std::string(61, 'c');
  ASSERT_EQ(domain189.size(), 189u);
  const std::string fits = "<" + std::string(64, 'a') + "@" + domain189 + ">";
  ASSERT_EQ(fits.size(), 256u);
  EXPECT_TRUE(parse_path(fits, PathKind::forward).has_value());
  const std::string over = "<" + std::string(64, 'a') + "@" + domain189 + "c>";
  ASSERT_EQ(over.size(), 257u);
  ASSERT_FALSE(parse_path(over, PathKind::forward).has_value());
  EXPECT_EQ(parse_path(over, PathKind::forward).error(), PathError::too_long);
}

TEST(Path, ReportsLengthAndLeavesTheRest) {
  const auto parsed = parse_path("<a@b.test> SIZE=10", PathKind::reverse);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->length, 10u);
  EXPECT_FALSE(parsed->path.non_ascii);
}

TEST(Path, QuotedLocalPartMayHoldAngleBracket) {
  const auto parsed = parse_path("<\"a>b\"@d.test>", PathKind::forward);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->path.address, "\"a>b\"@d.test");
  EXPECT_EQ(parsed->length, 14u);
}

TEST(Path, FlagsNonAscii) {
  const auto parsed = parse_path("<j\xc3\xb6rg@d.test>", PathKind::forward);
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->path.non_ascii);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xc3\xa9"));
  EXPECT_TRUE(is_valid_utf8("\xf0\x9f\x98\x80"));
  EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xc3"));
  EXPECT_FALSE(is_valid_utf8("\x80"));
  EXPECT_FALSE(is_valid_utf8("\xc1\xbf"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xe0\x80\xaf"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xf0\x80\x80\xaf"));  // overlong
  EXPECT_FALSE(is_valid_utf8("\xed\xbf\xbf"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xf8\x88\x80\x80\x80"));
}

}  // namespace
}  // namespace stsrelay::smtp
