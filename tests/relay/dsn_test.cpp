#include "relay/dsn.hpp"

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace stsrelay::relay {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

// A header section or a DSN field block: unfolded fields in order (names
// lower-cased), as a reader of the report would see them.
using Fields = std::vector<std::pair<std::string, std::string>>;

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  std::size_t position = 0;
  while (position < text.size()) {
    const std::size_t end = text.find("\r\n", position);
    if (end == std::string_view::npos) {
      lines.emplace_back(text.substr(position));
      break;
    }
    lines.emplace_back(text.substr(position, end - position));
    position = end + 2;
  }
  return lines;
}

Fields parse_fields(std::string_view block) {
  Fields fields;
  for (const auto& line : lines_of(block)) {
    if (line.empty()) {
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      EXPECT_FALSE(fields.empty()) << "continuation without a field: " << line;
      if (!fields.empty()) {
        fields.back().second += line;  // unfolding: drop the CRLF only
      }
      continue;
    }
    const std::size_t colon = line.find(':');
    EXPECT_NE(colon, std::string::npos) << "not a field: " << line;
    if (colon == std::string::npos) {
      continue;
    }
    std::string name = line.substr(0, colon);
    for (auto& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') {
      value.erase(0, 1);
    }
    fields.emplace_back(std::move(name), std::move(value));
  }
  return fields;
}

std::string get(const Fields& fields, std::string_view name) {
  for (const auto& [key, value] : fields) {
    if (key == name) {
      return value;
    }
  }
  return "<missing " + std::string(name) + ">";
}

struct Part {
  Fields headers;
  std::string body;
};

struct ParsedDsn {
  Fields headers;
  std::string boundary;
  std::vector<Part> parts;
};

std::pair<std::string_view, std::string_view> split_head(std::string_view entity) {
  const std::size_t end = entity.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return {entity, {}};
  }
  return {entity.substr(0, end + 2), entity.substr(end + 4)};
}

ParsedDsn parse(const std::string& message) {
  ParsedDsn parsed;
  const auto [head, body] = split_head(message);
  parsed.headers = parse_fields(head);
  const std::string type = get(parsed.headers, "content-type");
  const std::size_t at = type.find("boundary=\"");
  EXPECT_NE(at, std::string::npos) << type;
  if (at == std::string::npos) {
    return parsed;
  }
  parsed.boundary = type.substr(at + 10, type.find('"', at + 10) - (at + 10));
  const std::string delimiter = "\r\n--" + parsed.boundary;
  // The preamble ends where the first delimiter line begins.
  const std::string text = "\r\n" + std::string(body);
  std::size_t position = text.find(delimiter);
  while (position != std::string::npos) {
    std::size_t start = position + delimiter.size();
    if (text.compare(start, 2, "--") == 0) {
      EXPECT_EQ(text.substr(start + 2), "\r\n") << "something after the close delimiter";
      return parsed;
    }
    start += 2;  // CRLF after the delimiter
    const std::size_t next = text.find(delimiter, start);
    const std::string_view entity = std::string_view(text).substr(
        start, next == std::string::npos ? std::string::npos : next - start);
    const auto [part_head, part_body] = split_head(entity);
    parsed.parts.push_back(Part{parse_fields(part_head), std::string(part_body)});
    position = next;
  }
  ADD_FAILURE() << "no close delimiter";
  return parsed;
}

// The blocks of a delivery-status body: the per-message one first.
std::vector<Fields> status_blocks(std::string_view body) {
  std::vector<Fields> blocks;
  std::size_t position = 0;
  while (position < body.size()) {
    std::size_t end = body.find("\r\n\r\n", position);
    const std::string_view block = body.substr(
        position, end == std::string_view::npos ? std::string_view::npos : end + 2 - position);
    if (!block.empty()) {
      blocks.push_back(parse_fields(block));
    }
    if (end == std::string_view::npos) {
      break;
    }
    position = end + 4;
  }
  return blocks;
}

TimePoint at(std::int64_t seconds) {
  return TimePoint(std::chrono::seconds(seconds));
}

DsnInput sample() {
  DsnInput input;
  input.reporting_mta = "relay.example.net";
  input.original_id = "01HGW2N7B8RJ";
  input.original_sender = "alice@example.net";
  input.arrival = at(1'700'000'000);  // Tue, 14 Nov 2023 22:13:20 +0000
  input.now = at(1'700'003'600);
  input.recipients = {
      {"bob@example.org", "failed", "5.1.1", "mx1.example.org",
       "550 5.1.1 <bob@example.org>: no such user"},
      {"carol@example.com", "failed", "4.7.5", "",
       "MTA-STS policy of example.com (enforce): certificate-host-mismatch at mx.example.com"},
  };
  input.original_content =
      "Received: from client.example.net ([192.0.2.1])\r\n"
      "\tby relay.example.net (stsrelay) with ESMTP id 01HGW2N7B8RJ\r\n"
      "From: Alice <alice@example.net>\r\n"
      "To: bob@example.org, carol@example.com\r\n"
      "Subject: quarterly numbers\r\n"
      "Message-ID: <abc@example.net>\r\n"
      "\r\n"
      "SECRET BODY LINE\r\n";
  input.message_id_domain = "relay.example.net";
  return input;
}

void expect_well_formed_lines(const std::string& message) {
  for (std::size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '\n') {
      ASSERT_TRUE(i > 0 && message[i - 1] == '\r') << "bare LF at " << i;
    }
    if (message[i] == '\r') {
      ASSERT_TRUE(i + 1 < message.size() && message[i + 1] == '\n') << "bare CR at " << i;
    }
  }
  for (const auto& line : lines_of(message)) {
    EXPECT_LE(line.size(), 998u) << line.substr(0, 80);
  }
  ASSERT_GE(message.size(), 2u);
  EXPECT_EQ(message.substr(message.size() - 2), "\r\n");
}

TEST(Dsn, IsAMultipartReportWithThreeParts) {
  const std::string message = compose_dsn(sample(), "seed42");
  expect_well_formed_lines(message);
  const ParsedDsn dsn = parse(message);

  EXPECT_EQ(get(dsn.headers, "from"), "Mail Delivery System <MAILER-DAEMON@relay.example.net>");
  EXPECT_EQ(get(dsn.headers, "to"), "<alice@example.net>");
  EXPECT_EQ(get(dsn.headers, "subject"), "Undelivered Mail Returned to Sender");
  EXPECT_EQ(get(dsn.headers, "date"), "Tue, 14 Nov 2023 23:13:20 +0000");
  EXPECT_EQ(get(dsn.headers, "message-id"), "<seed42.01HGW2N7B8RJ@relay.example.net>");
  EXPECT_EQ(get(dsn.headers, "mime-version"), "1.0");
  EXPECT_EQ(get(dsn.headers, "auto-submitted"), "auto-replied");
  EXPECT_THAT(get(dsn.headers, "content-type"),
              HasSubstr("multipart/report; report-type=delivery-status;"));
  EXPECT_FALSE(dsn.boundary.empty());
  EXPECT_LE(dsn.boundary.size(), 70u);

  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(get(dsn.parts[0].headers, "content-type"), "text/plain; charset=us-ascii");
  EXPECT_EQ(get(dsn.parts[1].headers, "content-type"), "message/delivery-status");
  EXPECT_EQ(get(dsn.parts[2].headers, "content-type"), "text/rfc822-headers");

  // For people: each recipient and why.
  const std::string& notice = dsn.parts[0].body;
  EXPECT_THAT(notice, HasSubstr("relay.example.net"));
  EXPECT_THAT(notice, HasSubstr("<bob@example.org>: host mx1.example.org said: 550 5.1.1"));
  EXPECT_THAT(notice, HasSubstr("<carol@example.com>: MTA-STS policy of example.com"));

  // For programs.
  const auto blocks = status_blocks(dsn.parts[1].body);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(get(blocks[0], "reporting-mta"), "dns; relay.example.net");
  EXPECT_EQ(get(blocks[0], "x-stsrelay-queue-id"), "01HGW2N7B8RJ");
  EXPECT_EQ(get(blocks[0], "arrival-date"), "Tue, 14 Nov 2023 22:13:20 +0000");

  EXPECT_EQ(get(blocks[1], "final-recipient"), "rfc822; bob@example.org");
  EXPECT_EQ(get(blocks[1], "action"), "failed");
  EXPECT_EQ(get(blocks[1], "status"), "5.1.1");
  EXPECT_EQ(get(blocks[1], "remote-mta"), "dns; mx1.example.org");
  EXPECT_EQ(get(blocks[1], "diagnostic-code"), "smtp; 550 5.1.1 <bob@example.org>: no such user");
  EXPECT_EQ(get(blocks[1], "last-attempt-date"), "Tue, 14 Nov 2023 23:13:20 +0000");

  EXPECT_EQ(get(blocks[2], "final-recipient"), "rfc822; carol@example.com");
  EXPECT_EQ(get(blocks[2], "status"), "4.7.5");
  EXPECT_EQ(get(blocks[2], "remote-mta"), "<missing remote-mta>");
  EXPECT_EQ(get(blocks[2], "diagnostic-code"),
            "X-stsrelay; MTA-STS policy of example.com (enforce): certificate-host-mismatch at "
            "mx.example.com");
}

TEST(Dsn, ReturnsTheOriginalHeadersOnly) {
  const DsnInput input = sample();
  const ParsedDsn dsn = parse(compose_dsn(input, "seed"));
  ASSERT_EQ(dsn.parts.size(), 3u);
  const std::string header_section =
      input.original_content.substr(0, input.original_content.find("\r\n\r\n") + 2);
  EXPECT_EQ(dsn.parts[2].body, header_section);
  EXPECT_THAT(compose_dsn(input, "seed"), Not(HasSubstr("SECRET BODY")));
}

TEST(Dsn, AMessageWithoutBodyOrWithBareLineFeedsStillYieldsItsHeaders) {
  DsnInput input = sample();
  input.original_content = "Subject: a\nX-Other: b\n\nbody\n";
  ParsedDsn dsn = parse(compose_dsn(input, "seed"));
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].body, "Subject: a\r\nX-Other: b\r\n");

  input.original_content = "Subject: only headers\r\n";
  dsn = parse(compose_dsn(input, "seed"));
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].body, "Subject: only headers\r\n");
}

TEST(Dsn, AHugeHeaderSectionIsCutBetweenFields) {
  DsnInput input = sample();
  input.original_content.clear();
  for (int i = 0; i < 2'000; ++i) {
    input.original_content += "X-Filler-" + std::to_string(i) + ": " + std::string(60, 'f') +
                              "\r\n\t" + std::string(30, 'g') + "\r\n";
  }
  input.original_content += "\r\nbody\r\n";
  const std::string message = compose_dsn(input, "seed");
  expect_well_formed_lines(message);
  const ParsedDsn dsn = parse(message);
  ASSERT_EQ(dsn.parts.size(), 3u);
  const std::string& headers = dsn.parts[2].body;
  EXPECT_LE(headers.size(), 40u * 1024);
  EXPECT_GE(headers.size(), 30u * 1024);
  // Whole fields only: every field keeps its continuation line.
  const auto fields = parse_fields(headers);
  ASSERT_FALSE(fields.empty());
  EXPECT_EQ(fields.back().second, std::string(60, 'f') + "\t" + std::string(30, 'g'));
}

TEST(Dsn, InjectedLineBreaksAndControlsAreNeutralised) {
  DsnInput input = sample();
  input.recipients = {{"evil@example.org\r\nBcc: victim@example.com", "failed", "5.0.0",
                       "mx.example.org\r\nX-Injected: 1",
                       "550 no\r\nX-Injected: yes\r\n\r\n--boundary\x01\x7f\tend"}};
  input.original_sender = "alice@example.net\r\nX-Injected: sender";
  input.reporting_mta = "relay.example.net\r\nX-Injected: host";
  const std::string message = compose_dsn(input, "seed\r\nX-Injected: seed");
  expect_well_formed_lines(message);
  for (const auto& line : lines_of(message)) {
    EXPECT_NE(line.rfind("X-Injected", 0), 0u) << line;
    EXPECT_NE(line.rfind("Bcc:", 0), 0u) << line;
  }
  EXPECT_EQ(message.find('\x01'), std::string::npos);
  EXPECT_EQ(message.find('\x7f'), std::string::npos);

  const ParsedDsn dsn = parse(message);
  ASSERT_EQ(dsn.parts.size(), 3u);
  const auto blocks = status_blocks(dsn.parts[1].body);
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(get(blocks[1], "diagnostic-code"), "smtp; 550 no X-Injected: yes --boundary end");
  EXPECT_EQ(get(blocks[1], "final-recipient"), "rfc822; evil@example.org Bcc: victim@example.com");
  // A host name ends at the first character no host name has.
  EXPECT_EQ(get(blocks[1], "remote-mta"), "dns; mx.example.org");
  EXPECT_EQ(get(dsn.headers, "from"), "Mail Delivery System <MAILER-DAEMON@relay.example.net>");
}

TEST(Dsn, LongDiagnosticsAreFoldedAndCut) {
  DsnInput input = sample();
  std::string long_reply = "550-5.7.1";
  for (int i = 0; i < 300; ++i) {
    long_reply += " word" + std::to_string(i);
  }
  input.recipients = {
      {"bob@example.org", "failed", "5.7.1", "mx.example.org", long_reply},
      {"x@example.org", "failed", "5.7.1", "mx.example.org", std::string(5'000, 'z')}};
  const std::string message = compose_dsn(input, "seed");
  expect_well_formed_lines(message);
  const ParsedDsn dsn = parse(message);
  ASSERT_EQ(dsn.parts.size(), 3u);
  const auto blocks = status_blocks(dsn.parts[1].body);
  ASSERT_EQ(blocks.size(), 3u);
  const std::string diagnostic = get(blocks[1], "diagnostic-code");
  EXPECT_EQ(diagnostic.rfind("smtp; 550-5.7.1 word0 word1", 0), 0u) << diagnostic;
  EXPECT_LE(diagnostic.size(), 1000u);
  EXPECT_EQ(diagnostic.substr(diagnostic.size() - 3), "...");
  EXPECT_EQ(get(blocks[2], "diagnostic-code").size(), std::string("X-stsrelay; ").size() + 900);
  for (const auto& line : lines_of(dsn.parts[1].body)) {
    if (line.find(' ') != std::string::npos && line.find("zzzz") == std::string::npos) {
      EXPECT_LE(line.size(), 78u) << line;  // folded where it can be
    }
  }
}

TEST(Dsn, IsDeterministicForASeed) {
  const DsnInput input = sample();
  EXPECT_EQ(compose_dsn(input, "seed-1"), compose_dsn(input, "seed-1"));
  const ParsedDsn one = parse(compose_dsn(input, "seed-1"));
  const ParsedDsn two = parse(compose_dsn(input, "seed-2"));
  EXPECT_NE(one.boundary, two.boundary);
  EXPECT_NE(get(one.headers, "message-id"), get(two.headers, "message-id"));
}

TEST(Dsn, TheBoundaryAvoidsWhatTheHeadersContain) {
  DsnInput input = sample();
  const std::string first_boundary = parse(compose_dsn(input, "seed")).boundary;
  input.original_content =
      "X-Trap: x\r\n--" + first_boundary + "\r\n--" + first_boundary + ".1--\r\n\r\nbody\r\n";
  const std::string message = compose_dsn(input, "seed");
  const ParsedDsn dsn = parse(message);
  EXPECT_NE(dsn.boundary, first_boundary);
  EXPECT_NE(dsn.boundary, first_boundary + ".1");
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_THAT(dsn.parts[2].body, HasSubstr("X-Trap: x"));
}

TEST(Dsn, DelayedOnlyReportsSaySo) {
  DsnInput input = sample();
  input.recipients = {
      {"bob@example.org", "delayed", "4.4.1", "mx.example.org", "connection timed out"}};
  const ParsedDsn dsn = parse(compose_dsn(input, "seed"));
  EXPECT_EQ(get(dsn.headers, "subject"), "Delayed Mail (still being retried)");
  ASSERT_EQ(dsn.parts.size(), 3u);
  const auto blocks = status_blocks(dsn.parts[1].body);
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(get(blocks[1], "action"), "delayed");
  EXPECT_EQ(get(blocks[1], "diagnostic-code"), "X-stsrelay; connection timed out");
  EXPECT_THAT(dsn.parts[0].body, HasSubstr("<bob@example.org>: connection timed out"));
}

TEST(Dsn, InvalidActionsAndStatusesAreReplaced) {
  struct Case {
    std::string action;
    std::string status;
    std::string expected_action;
    std::string expected_status;
  };
  const std::vector<Case> cases{
      {"failed", "5.1.1", "failed", "5.1.1"}, {"FAILED", "5.1.10", "failed", "5.1.10"},
      {"failed", "550", "failed", "5.0.0"},   {"failed", "5.1.1\r\nX: y", "failed", "5.0.0"},
      {"failed", "6.1.1", "failed", "5.0.0"}, {"failed", "5.1234.1", "failed", "5.0.0"},
      {"delayed", "", "delayed", "4.0.0"},    {"exploded", "5.1.1", "failed", "5.1.1"},
  };
  for (const auto& c : cases) {
    DsnInput input = sample();
    input.recipients = {{"bob@example.org", c.action, c.status, "", "550 no"}};
    const ParsedDsn dsn = parse(compose_dsn(input, "seed"));
    ASSERT_EQ(dsn.parts.size(), 3u);
    const auto blocks = status_blocks(dsn.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(get(blocks[1], "action"), c.expected_action) << c.action;
    EXPECT_EQ(get(blocks[1], "status"), c.expected_status) << c.status;
  }
}

TEST(Dsn, InternationalisedAddressesMakeAGlobalReport) {
  DsnInput input = sample();
  input.recipients = {
      {"j\xc3\xb6rg+tag@b\xc3\xbc"
       "cher.example",
       "failed", "5.1.1", "mx.example.org", "550 5.1.1 unknown"},
      {"bob@example.org", "failed", "5.1.1", "mx.example.org", "550 5.1.1 unknown"},
  };
  EXPECT_TRUE(dsn_is_global(input));
  const std::string message = compose_dsn(input, "seed");
  expect_well_formed_lines(message);
  const ParsedDsn dsn = parse(message);
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(get(dsn.headers, "content-transfer-encoding"), "8bit");
  EXPECT_EQ(get(dsn.parts[0].headers, "content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(get(dsn.parts[1].headers, "content-type"), "message/global-delivery-status");
  EXPECT_EQ(get(dsn.parts[2].headers, "content-type"), "message/global-headers");
  const auto blocks = status_blocks(dsn.parts[1].body);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(get(blocks[1], "final-recipient"),
            "utf-8; j\xc3\xb6rg\\x{2B}tag@b\xc3\xbc"
            "cher.example");
  EXPECT_EQ(get(blocks[2], "final-recipient"), "rfc822; bob@example.org");

  // Invalid UTF-8 never reaches the report.
  input.recipients[0].address = "bad\xff\xc3@example.org";
  const std::string cleaned = compose_dsn(input, "seed");
  EXPECT_EQ(cleaned.find('\xff'), std::string::npos);
  EXPECT_THAT(cleaned, HasSubstr("bad??@example.org"));
}

TEST(Dsn, AnAsciiReportOfAnSmtputf8MessageIsGlobalToo) {
  DsnInput input = sample();
  EXPECT_FALSE(dsn_is_global(input));
  EXPECT_EQ(compose_dsn(input, "seed").find("global"), std::string::npos);
  input.smtputf8 = true;
  EXPECT_TRUE(dsn_is_global(input));
  input.original_content = "Subject: gr\xc3\xbc\xc3\x9f\x65\r\n\r\nbody\r\n";
  const ParsedDsn dsn = parse(compose_dsn(input, "seed"));
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(get(dsn.parts[2].headers, "content-type"), "message/global-headers");
  EXPECT_EQ(get(dsn.parts[2].headers, "content-transfer-encoding"), "8bit");
  EXPECT_EQ(get(dsn.parts[1].headers, "content-transfer-encoding"),
            "<missing content-transfer-encoding>");
}

TEST(Dsn, OnlyTheNullSenderGetsNoReport) {
  EXPECT_FALSE(needs_dsn(""));
  EXPECT_TRUE(needs_dsn("alice@example.net"));
  EXPECT_TRUE(needs_dsn("MAILER-DAEMON@example.net"));
}

}  // namespace
}  // namespace stsrelay::relay
