#include "sts/http_response.hpp"

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::sts {
namespace {

using namespace std::string_literals;

struct Outcome {
  HttpResponseParser::State state = HttpResponseParser::State::need_more;
  int status = 0;
  std::string body;
  std::optional<HttpParseError> error;

  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Outcome& outcome) {
  out << "state=" << static_cast<int>(outcome.state) << " status=" << outcome.status << " body=\""
      << outcome.body << "\"";
  if (outcome.error) {
    out << " error=" << to_string(*outcome.error);
  }
  return out;
}

constexpr HttpLimits small_limits{256, 64};

// Feeds the pieces in order, then reports the end of the connection.
Outcome parse(const std::vector<std::string_view>& pieces, HttpLimits limits = small_limits) {
  HttpResponseParser parser(limits);
  for (auto piece : pieces) {
    if (parser.feed(piece) != HttpResponseParser::State::need_more) {
      break;
    }
  }
  parser.finish();
  Outcome outcome{parser.state(), parser.response().status, parser.response().body, std::nullopt};
  if (parser.state() == HttpResponseParser::State::failed) {
    outcome.status = 0;
    outcome.body.clear();
    outcome.error = parser.error();
  }
  return outcome;
}

Outcome parse_whole(std::string_view bytes) {
  return parse({bytes});
}

Outcome parse_bytewise(std::string_view bytes) {
  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    pieces.push_back(bytes.substr(i, 1));
  }
  return parse(pieces);
}

Outcome complete(int status, std::string body) {
  return {HttpResponseParser::State::complete, status, std::move(body), std::nullopt};
}
Outcome failed(HttpParseError error) {
  return {HttpResponseParser::State::failed, 0, "", error};
}

struct Case {
  const char* name;
  std::string input;
  Outcome expected;
};

const std::string ok_head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";

std::vector<Case> cases() {
  return {
      // Status lines.
      {"content_length", ok_head + "Content-Length: 5\r\n\r\nhello", complete(200, "hello")},
      {"http_1_0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", complete(200, "ok")},
      {"no_reason_phrase", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", complete(200, "ok")},
      {"empty_reason_phrase", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", complete(404, "")},
      {"long_reason_phrase", "HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n",
       complete(404, "")},
      {"bare_lf_lines", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", complete(200, "ok")},
      {"http_2", "HTTP/2 200 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"lowercase_version", "http/1.1 200 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"two_digit_status", "HTTP/1.1 20 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"four_digit_status", "HTTP/1.1 2000 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"status_below_100", "HTTP/1.1 099 Odd\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"status_above_599", "HTTP/1.1 600 Odd\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"not_http", "ICY 200 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"empty_first_line", "\r\nHTTP/1.1 200 OK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"bare_cr_in_status", "HTTP/1.1 200 O\rK\r\n\r\n", failed(HttpParseError::bad_status_line)},
      {"interim_response_skipped",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
       complete(200, "ok")},
      {"upgrade_refused", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
       failed(HttpParseError::unexpected_upgrade)},
      {"no_content_has_no_body", "HTTP/1.1 204 No Content\r\n\r\n", complete(204, "")},

      // Headers.
      {"value_whitespace_trimmed", "HTTP/1.1 200 OK\r\nContent-Length:   2 \t\r\n\r\nok",
       complete(200, "ok")},
      {"folded_header", ok_head + "X-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n",
       failed(HttpParseError::folded_header)},
      {"folded_header_tab", ok_head + "X-Long: a\r\n\tb\r\n\r\n",
       failed(HttpParseError::folded_header)},
      {"space_before_colon", "HTTP/1.1 200 OK\r\nContent-Type : text/plain\r\n\r\n",
       failed(HttpParseError::bad_header)},
      {"no_colon", "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", failed(HttpParseError::bad_header)},
      {"empty_name", "HTTP/1.1 200 OK\r\n: value\r\n\r\n", failed(HttpParseError::bad_header)},
      {"nul_in_value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n"s, failed(HttpParseError::bad_header)},
      {"bare_cr_in_value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
       failed(HttpParseError::bad_header)},
      {"headers_too_large", ok_head + "X-Big: " + std::string(300, 'x') + "\r\n\r\n",
       failed(HttpParseError::headers_too_large)},
      {"many_headers_too_large",
       ok_head +
           [] {
             std::string many;
             for (int i = 0; i < 30; ++i) {
               many += "X-H" + std::to_string(i) + ": v\r\n";
             }
             return many;
           }() +
           "\r\n",
       failed(HttpParseError::headers_too_large)},
      {"unterminated_huge_line", ok_head + std::string(1000, 'x'),
       failed(HttpParseError::headers_too_large)},

      // Content-Length.
      {"identical_duplicate_length", ok_head + "Content-Length: 2\r\nContent-Length: 2\r\n\r\nok",
       complete(200, "ok")},
      {"identical_length_list", ok_head + "Content-Length: 2, 2\r\n\r\nok", complete(200, "ok")},
      {"conflicting_duplicate_length",
       ok_head + "Content-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
       failed(HttpParseError::bad_content_length)},
      {"conflicting_length_list", ok_head + "Content-Length: 2, 3\r\n\r\nok!",
       failed(HttpParseError::bad_content_length)},
      {"negative_length", ok_head + "Content-Length: -1\r\n\r\n",
       failed(HttpParseError::bad_content_length)},
      {"hex_length", ok_head + "Content-Length: 0x10\r\n\r\n",
       failed(HttpParseError::bad_content_length)},
      {"empty_length", ok_head + "Content-Length: \r\n\r\n",
       failed(HttpParseError::bad_content_length)},
      {"overflowing_length", ok_head + "Content-Length: 99999999999999999999999\r\n\r\n",
       failed(HttpParseError::bad_content_length)},
      {"length_over_limit", ok_head + "Content-Length: 65\r\n\r\n",
       failed(HttpParseError::body_too_large)},
      {"length_at_limit", ok_head + "Content-Length: 64\r\n\r\n" + std::string(64, 'a'),
       complete(200, std::string(64, 'a'))},
      {"length_zero", ok_head + "Content-Length: 0\r\n\r\n", complete(200, "")},
      {"extra_bytes_ignored", ok_head + "Content-Length: 2\r\n\r\nokEXTRA", complete(200, "ok")},
      {"body_truncated", ok_head + "Content-Length: 10\r\n\r\nshort",
       failed(HttpParseError::truncated)},
      {"headers_truncated", "HTTP/1.1 200 OK\r\nContent-Le", failed(HttpParseError::truncated)},

      // Chunked.
      {"chunked",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
       complete(200, "hello world")},
      {"chunked_case_insensitive",
       ok_head + "transfer-encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
       complete(200, "0123456789")},
      {"chunked_extensions",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n"
                 "3 ; q=\"a;b\"\r\nabc\r\n0;last\r\n\r\n",
       complete(200, "helloabc")},
      {"chunked_trailers",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n",
       complete(200, "ok")},
      {"chunked_leading_zeros",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n0000000000000000000002\r\nok\r\n0\r\n\r\n",
       complete(200, "ok")},
      {"chunk_size_overflow",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF\r\nok\r\n0\r\n\r\n",
       failed(HttpParseError::bad_chunk)},
      {"chunk_size_not_hex", ok_head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
       failed(HttpParseError::bad_chunk)},
      {"chunk_size_empty", ok_head + "Transfer-Encoding: chunked\r\n\r\n\r\n",
       failed(HttpParseError::bad_chunk)},
      {"chunk_size_junk", ok_head + "Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n",
       failed(HttpParseError::bad_chunk)},
      {"chunk_without_crlf", ok_head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
       failed(HttpParseError::bad_chunk)},
      {"chunk_over_limit", ok_head + "Transfer-Encoding: chunked\r\n\r\n41\r\n",
       failed(HttpParseError::body_too_large)},
      {"chunks_over_limit",
       ok_head + "Transfer-Encoding: chunked\r\n\r\n20\r\n" + std::string(32, 'a') + "\r\n21\r\n",
       failed(HttpParseError::body_too_large)},
      {"chunked_truncated", ok_head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
       failed(HttpParseError::truncated)},
      {"chunked_missing_last_chunk", ok_head + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
       failed(HttpParseError::truncated)},
      {"transfer_encoding_and_length",
       ok_head + "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
       failed(HttpParseError::ambiguous_length)},
      {"gzip_coding", ok_head + "Transfer-Encoding: gzip\r\n\r\n",
       failed(HttpParseError::unsupported_transfer_encoding)},
      {"gzip_then_chunked", ok_head + "Transfer-Encoding: gzip, chunked\r\n\r\n",
       failed(HttpParseError::unsupported_transfer_encoding)},

      // Delimited by the end of the connection.
      {"body_until_close", ok_head + "\r\npolicy until close", complete(200, "policy until close")},
      {"body_until_close_over_limit", ok_head + "\r\n" + std::string(65, 'a'),
       failed(HttpParseError::body_too_large)},
  };
}

class HttpResponseParserTest : public ::testing::TestWithParam<Case> {};

TEST_P(HttpResponseParserTest, WholeInput) {
  EXPECT_EQ(parse_whole(GetParam().input), GetParam().expected);
}

TEST_P(HttpResponseParserTest, OneByteAtATime) {
  EXPECT_EQ(parse_bytewise(GetParam().input), GetParam().expected);
}

TEST_P(HttpResponseParserTest, SplitAnywhere) {
  std::string_view input = GetParam().input;
  for (std::size_t split = 1; split < input.size(); ++split) {
    EXPECT_EQ(parse({input.substr(0, split), input.substr(split)}), GetParam().expected)
        << "split at " << split;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, HttpResponseParserTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(HttpResponseParser, HeadersCanBeJudgedBeforeTheBody) {
  HttpResponseParser parser;
  parser.feed("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n");
  EXPECT_FALSE(parser.headers_complete());
  EXPECT_EQ(parser.feed("\r\n<html>"), HttpResponseParser::State::need_more);
  ASSERT_TRUE(parser.headers_complete());
  EXPECT_EQ(parser.response().status, 404);
  EXPECT_EQ(parser.response().reason_phrase, "Not Found");
  EXPECT_EQ(parser.response().header("content-type"), "text/html");
  EXPECT_EQ(parser.response().header("X-Missing"), std::nullopt);
}

TEST(HttpResponseParser, HeaderLookupIsCaseInsensitiveAndFirstWins) {
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\ncontent-TYPE: text/plain\r\nContent-Type: text/html\r\n"
                        "Content-Length: 0\r\n\r\n"),
            HttpResponseParser::State::complete);
  EXPECT_EQ(parser.response().header("Content-Type"), "text/plain");
  EXPECT_EQ(parser.response().headers.size(), 3u);
}

TEST(HttpResponseParser, BodyUntilCloseNeedsFinish) {
  HttpResponseParser parser;
  EXPECT_EQ(parser.feed("HTTP/1.1 200 OK\r\n\r\nabc"), HttpResponseParser::State::need_more);
  EXPECT_TRUE(parser.body_until_close());
  EXPECT_EQ(parser.finish(), HttpResponseParser::State::complete);
  EXPECT_EQ(parser.take_response().body, "abc");
}

TEST(HttpResponseParser, FailureIsFinal) {
  HttpResponseParser parser;
  EXPECT_EQ(parser.feed("HTTP/9 200 OK\r\n"), HttpResponseParser::State::failed);
  EXPECT_EQ(parser.feed("HTTP/1.1 200 OK\r\n\r\n"), HttpResponseParser::State::failed);
  EXPECT_EQ(parser.finish(), HttpResponseParser::State::failed);
  EXPECT_EQ(parser.error(), HttpParseError::bad_status_line);
  EXPECT_FALSE(parser.error_detail().empty());
}

}  // namespace
}  // namespace stsrelay::sts
