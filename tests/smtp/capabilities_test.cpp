#include "smtp/capabilities.hpp"

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

Reply ehlo(std::vector<std::string> lines, int code = 250) {
  return Reply{code, "", std::move(lines)};
}

TEST(ParseCapabilities, ReadsTheKnownKeywords) {
  auto capabilities =
      parse_capabilities(ehlo({"mx.b.test greets you", "PIPELINING", "SIZE 10240000", "8BITMIME",
                               "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS"}));
  EXPECT_TRUE(capabilities.pipelining);
  EXPECT_TRUE(capabilities.size);
  EXPECT_EQ(capabilities.size_limit, 10240000u);
  EXPECT_TRUE(capabilities.eight_bit_mime);
  EXPECT_TRUE(capabilities.smtputf8);
  EXPECT_TRUE(capabilities.enhanced_status_codes);
  EXPECT_TRUE(capabilities.starttls);
}

TEST(ParseCapabilities, KeywordsAreCaseInsensitive) {
  auto capabilities = parse_capabilities(ehlo({"mx", "pipelining", "StartTls", "size 100"}));
  EXPECT_TRUE(capabilities.pipelining);
  EXPECT_TRUE(capabilities.starttls);
  EXPECT_EQ(capabilities.size_limit, 100u);
}

TEST(ParseCapabilities, TheGreetingLineIsNoKeyword) {
  auto capabilities = parse_capabilities(ehlo({"STARTTLS"}));
  EXPECT_FALSE(capabilities.starttls);
  capabilities = parse_capabilities(ehlo({"PIPELINING hello", "8BITMIME"}));
  EXPECT_FALSE(capabilities.pipelining);
  EXPECT_TRUE(capabilities.eight_bit_mime);
}

TEST(ParseCapabilities, SizeWithoutALimit) {
  for (const char* line : {"SIZE", "SIZE 0", "SIZE   ", "SIZE lots", "SIZE 12x"}) {
    auto capabilities = parse_capabilities(ehlo({"mx", line}));
    EXPECT_TRUE(capabilities.size) << line;
    EXPECT_FALSE(capabilities.size_limit.has_value()) << line;
  }
  EXPECT_FALSE(parse_capabilities(ehlo({"mx", "PIPELINING"})).size);
}

TEST(ParseCapabilities, IgnoresUnknownAndLookalikeKeywords) {
  auto capabilities = parse_capabilities(ehlo(
      {"mx", "DSN", "AUTH PLAIN LOGIN", "X-STARTTLS", "STARTTLSX", "CHUNKING", "PIPELINING2"}));
  EXPECT_FALSE(capabilities.starttls);
  EXPECT_FALSE(capabilities.pipelining);
}

TEST(ParseCapabilities, OnlyA250Offers) {
  EXPECT_FALSE(parse_capabilities(ehlo({"mx", "STARTTLS"}, 502)).starttls);
}

}  // namespace
}  // namespace stsrelay::smtp
