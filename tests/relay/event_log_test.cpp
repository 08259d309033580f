#include "relay/event_log.hpp"

#include <regex>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

namespace stsrelay::relay {
namespace {

std::string text(std::string_view value) {
  return format_event(LogFormat::text, "e", {{"k", value}});
}

TEST(TextEvent, KeyValueFieldsInOrder) {
  EXPECT_EQ(
      format_event(LogFormat::text, "queued",
                   {{"queue_id", std::string_view("0ABCDEFGHJKM")},
                    {"client", std::string_view("127.0.0.1")},
                    {"sender", std::string_view("<a@b.example>")},
                    {"recipients", std::vector<std::string>{"<x@y.example>", "<z@w.example>"}},
                    {"size", std::uint64_t{123}},
                    {"delta", std::int64_t{-4}},
                    {"tls", true},
                    {"held", false}}),
      "queued queue_id=0ABCDEFGHJKM client=127.0.0.1 sender=<a@b.example> "
      "recipients=<x@y.example>,<z@w.example> size=123 delta=-4 tls=true held=false");
}

TEST(TextEvent, NoFields) {
  EXPECT_EQ(format_event(LogFormat::text, "started", {}), "started");
}

struct Quoting {
  std::string value;
  std::string rendered;
};

class TextValues : public testing::TestWithParam<Quoting> {};

TEST_P(TextValues, QuotedAndEscapedWhenNeeded) {
  EXPECT_EQ(text(GetParam().value), "e k=" + GetParam().rendered);
}

INSTANTIATE_TEST_SUITE_P(
    Table, TextValues,
    testing::Values(
        Quoting{"plain", "plain"}, Quoting{"<>", "<>"}, Quoting{"", "\"\""},
        Quoting{"two words", "\"two words\""},
        Quoting{"250 2.0.0 Ok: queued", "\"250 2.0.0 Ok: queued\""}, Quoting{"a=b", "\"a=b\""},
        Quoting{"say \"hi\"", "\"say \\\"hi\\\"\""}, Quoting{"back\\slash", "\"back\\\\slash\""},
        Quoting{"evil\r\n2026-01-01T00:00:00.000Z info sent",
                "\"evil\\r\\n2026-01-01T00:00:00.000Z info sent\""},
        Quoting{"lf\nonly", "\"lf\\nonly\""}, Quoting{"tab\there", "\"tab\\there\""},
        Quoting{std::string("nul\0byte", 8), "\"nul\\x00byte\""},
        Quoting{"esc\x1b[31m", "\"esc\\x1b[31m\""}, Quoting{"del\x7f", "\"del\\x7f\""},
        Quoting{"caf\xc3\xa9", "caf\xc3\xa9"},
        Quoting{"\xe2\x9c\x89@\xe4\xbe\x8b.example", "\xe2\x9c\x89@\xe4\xbe\x8b.example"},
        Quoting{"bad\xff", "\"bad\\xff\""}, Quoting{"over\xc0\xaflong", "\"over\\xc0\\xaflong\""},
        Quoting{"cut\xe2\x9c", "\"cut\\xe2\\x9c\""},
        Quoting{"surrogate\xed\xa0\x80", "\"surrogate\\xed\\xa0\\x80\""},
        Quoting{"nel\xc2\x85x", "\"nel\\u0085x\""}, Quoting{"ls\xe2\x80\xa8x", "\"ls\\u2028x\""}));

TEST(TextEvent, ListsAreQuotedAsAWholeWhenNeeded) {
  EXPECT_EQ(
      format_event(LogFormat::text, "e", {{"r", std::vector<std::string>{"<a b@x>", "<c@y>"}}}),
      "e r=\"<a b@x>,<c@y>\"");
  EXPECT_EQ(format_event(LogFormat::text, "e", {{"r", std::vector<std::string>{}}}), "e r=\"\"");
}

TEST(TextEvent, NeverContainsALineBreak) {
  const std::string hostile =
      "a\rb\nc\r\nd\xe2\x80\xa8"
      "e\xc2\x85";
  const auto line = format_event(
      LogFormat::text, "e",
      {{"s", std::string_view(hostile)}, {"l", std::vector<std::string>{hostile, hostile}}});
  EXPECT_EQ(line.find_first_of("\r\n"), std::string::npos) << line;
}

TEST(JsonEvent, TypedFieldsInOrder) {
  const auto line = format_event(LogFormat::json, "queued",
                                 {{"queue_id", std::string_view("0ABCDEFGHJKM")},
                                  {"recipients", std::vector<std::string>{"<x@y>", "<z@w>"}},
                                  {"size", std::uint64_t{123}},
                                  {"delta", std::int64_t{-4}},
                                  {"tls", true}});
  EXPECT_EQ(line, R"({"event":"queued","queue_id":"0ABCDEFGHJKM","recipients":["<x@y>","<z@w>"],)"
                  R"("size":123,"delta":-4,"tls":true})");
}

TEST(JsonEvent, EscapesControlCharactersAndQuotes) {
  const auto line =
      format_event(LogFormat::json, "e", {{"s", std::string_view("a\"b\\c\r\nd\x01")}});
  EXPECT_EQ(line, R"({"event":"e","s":"a\"b\\c\r\nd\u0001"})");
  EXPECT_EQ(nlohmann::json::parse(line)["s"], "a\"b\\c\r\nd\x01");
}

TEST(JsonEvent, InvalidUtf8IsReplacedNotThrown) {
  std::string line;
  ASSERT_NO_THROW(line = format_event(LogFormat::json, "e",
                                      {{"s", std::string_view("bad\xff\xfe")},
                                       {"l", std::vector<std::string>{"x\xc0"}}}));
  const auto parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["s"], "bad\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(parsed["l"][0], "x\xef\xbf\xbd");
}

TEST(JsonEvent, Utf8PassesThrough) {
  const auto line =
      format_event(LogFormat::json, "e", {{"s", std::string_view("\xe2\x9c\x89@\xe4\xbe\x8b")}});
  EXPECT_EQ(line, "{\"event\":\"e\",\"s\":\"\xe2\x9c\x89@\xe4\xbe\x8b\"}");
}

class CapturedLog : public testing::Test {
 protected:
  void use(LogFormat format, LogLevel level = LogLevel::info) {
    stream_.str("");
    setup_logging(LogConfig{level, format},
                  std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_));
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::istringstream in(stream_.str());
    for (std::string line; std::getline(in, line);) {
      out.push_back(line);
    }
    return out;
  }
  void TearDown() override { setup_logging(LogConfig{}); }

  std::ostringstream stream_;
};

const std::regex timestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");

TEST_F(CapturedLog, TextLineHasUtcTimestampLevelAndEvent) {
  use(LogFormat::text);
  log_event(spdlog::level::info, "queued", {{"queue_id", std::string_view("0A")}});
  log_event(spdlog::level::warn, "deferred", {{"reply", std::string_view("451 try\r\nlater")}});
  spdlog::error("free text\nsecond line");
  const auto got = lines();
  ASSERT_EQ(got.size(), 3u) << stream_.str();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(got[0], match, timestamp));
  EXPECT_EQ(match.position(0), 0);
  EXPECT_EQ(got[0].substr(24), " info queued queue_id=0A");
  EXPECT_EQ(got[1].substr(24), " warn deferred reply=\"451 try\\r\\nlater\"");
  EXPECT_EQ(got[2].substr(24), " error free text\\nsecond line");
}

TEST_F(CapturedLog, JsonLineIsOneObject) {
  use(LogFormat::json);
  log_event(spdlog::level::info, "queued",
            {{"queue_id", std::string_view("0A")}, {"size", std::uint64_t{5}}});
  spdlog::warn("free \"text\"");
  const auto got = lines();
  ASSERT_EQ(got.size(), 2u) << stream_.str();
  const auto event = nlohmann::ordered_json::parse(got[0]);
  EXPECT_TRUE(std::regex_match(event["time"].get<std::string>(), timestamp));
  EXPECT_EQ(event["level"], "info");
  EXPECT_EQ(event["event"], "queued");
  EXPECT_EQ(event["queue_id"], "0A");
  EXPECT_EQ(event["size"], 5);
  std::vector<std::string> keys;
  for (const auto& [key, value] : event.items()) {
    keys.push_back(key);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"time", "level", "event", "queue_id", "size"}));
  const auto text = nlohmann::json::parse(got[1]);
  EXPECT_EQ(text["level"], "warn");
  EXPECT_EQ(text["message"], "free \"text\"");
}

TEST_F(CapturedLog, LevelFiltersAndCanChangeAtRunTime) {
  use(LogFormat::text, LogLevel::warn);
  log_event(spdlog::level::info, "hidden", {});
  log_event(spdlog::level::err, "shown", {});
  set_log_level(LogLevel::debug);
  log_event(spdlog::level::debug, "now_shown", {});
  spdlog::trace("hidden");
  const auto got = lines();
  ASSERT_EQ(got.size(), 2u) << stream_.str();
  EXPECT_EQ(got[0].substr(24), " error shown");
  EXPECT_EQ(got[1].substr(24), " debug now_shown");
}

}  // namespace
}  // namespace stsrelay::relay
