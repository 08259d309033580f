#include "smtp/reply_parser.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

// Every reply in `input`, or the error that ended the parse.
struct Parsed {
  std::vector<Reply> replies;
  std::string error;  // empty: no error
  std::size_t left_over = 0;
};

Parsed parse_all(ReplyParser& parser) {
  Parsed parsed;
  while (auto next = parser.next()) {
    if (!*next) {
      parsed.error = next->error();
      break;
    }
    parsed.replies.push_back(std::move(**next));
  }
  parsed.left_over = parser.buffered();
  return parsed;
}

Parsed parse_whole(std::string_view input) {
  ReplyParser parser;
  parser.append(input);
  return parse_all(parser);
}

// The same bytes, one at a time, taking replies as soon as they are complete.
Parsed parse_bytewise(std::string_view input) {
  ReplyParser parser;
  Parsed parsed;
  for (char byte : input) {
    parser.append(std::string_view(&byte, 1));
    Parsed step = parse_all(parser);
    parsed.replies.insert(parsed.replies.end(), step.replies.begin(), step.replies.end());
    if (!step.error.empty()) {
      parsed.error = step.error;
      break;
    }
  }
  parsed.left_over = parser.buffered();
  return parsed;
}

struct GoodCase {
  std::string name;
  std::string input;
  int code;
  std::string enhanced;
  std::vector<std::string> lines;
};

void PrintTo(const GoodCase& c, std::ostream* out) {
  *out << c.name;
}

class ReplyParserGood : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ReplyParserGood, ParsesWholeAndByteAtATime) {
  const GoodCase& c = GetParam();
  for (const Parsed& parsed : {parse_whole(c.input), parse_bytewise(c.input)}) {
    ASSERT_EQ(parsed.error, "");
    ASSERT_EQ(parsed.replies.size(), 1u);
    const Reply& reply = parsed.replies.front();
    EXPECT_EQ(reply.code, c.code);
    EXPECT_EQ(reply.enhanced, c.enhanced);
    EXPECT_EQ(reply.lines, c.lines);
    EXPECT_EQ(parsed.left_over, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReplyParserGood,
    ::testing::Values(
        GoodCase{"single", "250 ok\r\n", 250, "", {"ok"}},
        GoodCase{"greeting", "220 mx.example.test ESMTP\r\n", 220, "", {"mx.example.test ESMTP"}},
        GoodCase{"code_only", "250\r\n", 250, "", {""}},
        GoodCase{"code_and_space", "250 \r\n", 250, "", {""}},
        GoodCase{"lf_only", "250 ok\n", 250, "", {"ok"}},
        GoodCase{"multi_line",
                 "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n",
                 250,
                 "",
                 {"mx.example.test", "PIPELINING", "SIZE 1000", "STARTTLS"}},
        GoodCase{"multi_line_lf_only", "250-a\n250-b\n250 c\n", 250, "", {"a", "b", "c"}},
        GoodCase{"multi_line_mixed_ends", "250-a\r\n250-b\n250 c\r\n", 250, "", {"a", "b", "c"}},
        GoodCase{"empty_continuation", "250-\r\n250 last\r\n", 250, "", {"", "last"}},
        GoodCase{"enhanced", "250 2.1.0 sender ok\r\n", 250, "2.1.0", {"sender ok"}},
        GoodCase{
            "enhanced_permanent", "550 5.1.1 no such user\r\n", 550, "5.1.1", {"no such user"}},
        GoodCase{
            "enhanced_three_digit_parts", "451 4.123.456 later\r\n", 451, "4.123.456", {"later"}},
        GoodCase{"enhanced_alone", "250 2.0.0\r\n", 250, "2.0.0", {""}},
        GoodCase{"enhanced_on_every_line",
                 "550-5.7.1 first\r\n550 5.7.1 second\r\n",
                 550,
                 "5.7.1",
                 {"first", "second"}},
        GoodCase{"enhanced_from_the_first_line",
                 "451-4.3.0 first\r\n451 4.3.2 second\r\n",
                 451,
                 "4.3.0",
                 {"first", "second"}},
        // An enhanced code whose class disagrees with the reply code is text.
        GoodCase{"enhanced_class_mismatch", "250 5.1.1 odd\r\n", 250, "", {"5.1.1 odd"}},
        GoodCase{"enhanced_part_too_long", "250 2.1234.0 odd\r\n", 250, "", {"2.1234.0 odd"}},
        GoodCase{"enhanced_detail_too_long", "250 2.1.1234 odd\r\n", 250, "", {"2.1.1234 odd"}},
        GoodCase{"enhanced_glued_to_text", "250 2.1.0ok\r\n", 250, "", {"2.1.0ok"}},
        GoodCase{"version_like_text", "250 2.0 ok\r\n", 250, "", {"2.0 ok"}},
        GoodCase{"text_keeps_spaces", "554  two  spaces \r\n", 554, "", {" two  spaces "}},
        GoodCase{"line_of_maximum_length",
                 "250 " + std::string(ReplyParser::max_line_length - 4, 'x') + "\r\n",
                 250,
                 "",
                 {std::string(ReplyParser::max_line_length - 4, 'x')}}),
    [](const auto& info) { return info.param.name; });

struct BadCase {
  std::string name;
  std::string input;
  std::string error_contains;
};

void PrintTo(const BadCase& c, std::ostream* out) {
  *out << c.name;
}

class ReplyParserBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(ReplyParserBad, IsAnErrorWholeAndByteAtATime) {
  const BadCase& c = GetParam();
  for (const Parsed& parsed : {parse_whole(c.input), parse_bytewise(c.input)}) {
    EXPECT_TRUE(parsed.replies.empty());
    EXPECT_NE(parsed.error.find(c.error_contains), std::string::npos) << parsed.error;
  }
}

std::string many_lines(std::size_t count) {
  std::string input;
  for (std::size_t i = 0; i < count; ++i) {
    input += "250-line\r\n";
  }
  return input + "250 end\r\n";
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReplyParserBad,
    ::testing::Values(
        BadCase{"garbage", "hello there\r\n", "malformed reply line \"hello there\""},
        BadCase{"empty_line", "\r\n", "malformed"}, BadCase{"two_digits", "25 ok\r\n", "malformed"},
        BadCase{"letters_in_code", "2x0 ok\r\n", "malformed"},
        BadCase{"no_separator", "250ok\r\n", "malformed"},
        BadCase{"tab_separator", "250\tok\r\n", "malformed"},
        BadCase{"first_digit_one", "150 ok\r\n", "malformed"},
        BadCase{"first_digit_six", "650 ok\r\n", "malformed"},
        BadCase{"http_answer", "HTTP/1.1 400 Bad Request\r\n", "malformed"},
        BadCase{"tls_bytes", std::string("\x16\x03\x01\x00\x05hello\n", 11), "malformed"},
        BadCase{"code_changes", "250-first\r\n251 second\r\n",
                "reply code changed from 250 to 251 within one reply"},
        BadCase{"class_changes", "250-first\r\n550 second\r\n", "from 250 to 550"},
        BadCase{"garbage_in_continuation", "250-first\r\nsecond\r\n", "malformed"},
        BadCase{"over_long_line", "250 " + std::string(ReplyParser::max_line_length, 'x') + "\r\n",
                "reply line longer than 4096 octets"},
        BadCase{"over_long_line_without_end",
                "250 " + std::string(2 * ReplyParser::max_line_length, 'x'),
                "reply line longer than 4096 octets"},
        BadCase{"too_many_lines", many_lines(ReplyParser::max_lines),
                "reply of more than 256 lines"}),
    [](const auto& info) { return info.param.name; });

TEST(ReplyParser, NeedsMoreWithoutALineEnd) {
  ReplyParser parser;
  parser.append("250 ok");
  EXPECT_FALSE(parser.next().has_value());
  parser.append("\r");
  EXPECT_FALSE(parser.next().has_value());
  parser.append("\n");
  auto reply = parser.next();
  ASSERT_TRUE(reply.has_value());
  ASSERT_TRUE(reply->has_value());
  EXPECT_EQ((*reply)->lines, std::vector<std::string>{"ok"});
}

TEST(ReplyParser, WaitsForTheLastLineOfAMultiLineReply) {
  ReplyParser parser;
  parser.append("250-first\r\n250-second\r\n");
  EXPECT_FALSE(parser.next().has_value());
  EXPECT_EQ(parser.buffered(), 0u);
  parser.append("250 third\r\n");
  auto reply = parser.next();
  ASSERT_TRUE(reply && *reply);
  EXPECT_EQ((*reply)->lines, (std::vector<std::string>{"first", "second", "third"}));
}

TEST(ReplyParser, PipelinedRepliesComeOneAtATime) {
  const std::string input =
      "250 2.1.0 sender ok\r\n250 2.1.5 recipient ok\r\n550 5.1.1 no such user\r\n"
      "354 go ahead\r\n250-partial";
  for (const Parsed& parsed : {parse_whole(input), parse_bytewise(input)}) {
    EXPECT_EQ(parsed.error, "");
    ASSERT_EQ(parsed.replies.size(), 4u);
    EXPECT_EQ(parsed.replies[0].code, 250);
    EXPECT_EQ(parsed.replies[0].enhanced, "2.1.0");
    EXPECT_EQ(parsed.replies[1].enhanced, "2.1.5");
    EXPECT_EQ(parsed.replies[2].code, 550);
    EXPECT_EQ(parsed.replies[2].enhanced, "5.1.1");
    EXPECT_EQ(parsed.replies[2].lines, std::vector<std::string>{"no such user"});
    EXPECT_EQ(parsed.replies[3].code, 354);
    EXPECT_EQ(parsed.replies[3].enhanced, "");
    EXPECT_EQ(parsed.left_over, std::string("250-partial").size());
  }
}

// What Reply::wire() writes, the parser reads back.
TEST(ReplyParser, ReadsBackWhatReplyWrites) {
  const std::vector<Reply> replies{
      make_reply(250, "2.1.0", "Ok"),
      make_reply(221, "", "bye"),
      Reply{250, "", {"relay.test", "PIPELINING", "SIZE 10"}},
      Reply{451, "4.3.0", {"first", "second"}},
      Reply{250, "2.0.0", {""}},
  };
  for (const Reply& original : replies) {
    ReplyParser parser;
    parser.append(original.wire());
    auto parsed = parser.next();
    ASSERT_TRUE(parsed && *parsed) << original.wire();
    EXPECT_EQ((*parsed)->code, original.code);
    EXPECT_EQ((*parsed)->enhanced, original.enhanced);
    EXPECT_EQ((*parsed)->lines, original.lines);
  }
}

TEST(ReplyParser, AllowsTheMaximumNumberOfLines) {
  ReplyParser parser;
  parser.append(many_lines(ReplyParser::max_lines - 1));
  auto reply = parser.next();
  ASSERT_TRUE(reply && *reply);
  EXPECT_EQ((*reply)->lines.size(), ReplyParser::max_lines);
}

}  // namespace
}  // namespace stsrelay::smtp
