#include "smtp/data_reader.hpp"

#include <random>
#include <string>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

struct DataCase {
  std::string name;
  std::string input;
  bool finished;
  std::size_t consumed;  // when finished
  std::string content;   // when finished
};

struct Outcome {
  bool finished = false;
  std::size_t consumed = 0;
  std::string content;
};

Outcome feed_in_chunks(std::string_view input, std::size_t chunk, std::uint64_t max = 1 << 20) {
  DataReader reader(max);
  Outcome outcome;
  while (outcome.consumed < input.size()) {
    const auto piece = input.substr(outcome.consumed, chunk);
    const auto progress = reader.feed(piece);
    outcome.consumed += progress.consumed;
    if (progress.finished) {
      outcome.finished = true;
      break;
    }
    EXPECT_EQ(progress.consumed, piece.size()) << "an unfinished reader takes every byte";
  }
  outcome.content = reader.take_content();
  return outcome;
}

// Every CR is followed by LF and every LF preceded by CR.
bool only_crlf_line_ends(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n')) {
      return false;
    }
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) {
      return false;
    }
  }
  return true;
}

class DataTable : public ::testing::TestWithParam<DataCase> {};

TEST_P(DataTable, WholeAndByteAtATime) {
  const DataCase& c = GetParam();
  for (std::size_t chunk : {c.input.size() + 1, std::size_t{1}, std::size_t{2}, std::size_t{3}}) {
    const Outcome outcome = feed_in_chunks(c.input, chunk);
    EXPECT_EQ(outcome.finished, c.finished) << "chunk " << chunk;
    if (c.finished) {
      EXPECT_EQ(outcome.consumed, c.consumed) << "chunk " << chunk;
      EXPECT_EQ(outcome.content, c.content) << "chunk " << chunk;
    }
    EXPECT_TRUE(only_crlf_line_ends(outcome.content)) << "chunk " << chunk;
  }
}

std::string case_name(const ::testing::TestParamInfo<DataCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(
    EndAndUnstuffing, DataTable,
    ::testing::Values(
        DataCase{"EmptyMessage", ".\r\n", true, 3, ""},
        DataCase{"OneEmptyLine", "\r\n.\r\n", true, 5, "\r\n"},
        DataCase{"Simple", "Subject: x\r\n\r\nbody\r\n.\r\n", true, 23,
                 "Subject: x\r\n\r\nbody\r\n"},
        DataCase{"LeavesFollowingCommands", "a\r\n.\r\nQUIT\r\n", true, 6, "a\r\n"},
        DataCase{"Unstuffs", "..\r\n..a\r\n.b\r\n...\r\n.\r\n", true, 21, ".\r\n.a\r\nb\r\n..\r\n"},
        DataCase{"DotInsideLineKept", "a.b\r\na.\r\n.\r\n", true, 12, "a.b\r\na.\r\n"},
        DataCase{"DotSpaceIsNotEnd", ". \r\n.\r\n", true, 7, " \r\n"},
        DataCase{"DotWithTextIsNotEnd", ".x\r\n.\r\n", true, 7, "x\r\n"},
        DataCase{"NotFinished", "a\r\nb\r\n", false, 0, ""},
        DataCase{"NotFinishedAtDot", "a\r\n.", false, 0, ""},
        DataCase{"NotFinishedAtDotCr", "a\r\n.\r", false, 0, ""},
        DataCase{"EightBitKept", "caf\xc3\xa9\r\n.\r\n", true, 10, "caf\xc3\xa9\r\n"},
        DataCase{"NulKept", std::string("a\0b\r\n.\r\n", 8), true, 8, std::string("a\0b\r\n", 5)}),
    case_name);

// CVE-2023-51764 class: each of these must neither end the data nor be stored
// with a bare CR or LF.
INSTANTIATE_TEST_SUITE_P(
    Smuggling, DataTable,
    ::testing::Values(
        DataCase{"LfDotLf", "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", true, 24,
                 "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        DataCase{"LfDotCrlf", "a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", true, 25,
                 "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        DataCase{"CrDotCr", "a\r.\rMAIL FROM:<x@y>\r\n.\r\n", true, 24,
                 "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        DataCase{"CrlfDotLf", "a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", true, 25,
                 "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        DataCase{"CrlfDotCr", "a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n", true, 25,
                 "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        DataCase{"CrDotCrlf", "a\r.\r\nb\r\n.\r\n", true, 11, "a\r\n.\r\nb\r\n"},
        DataCase{"BareLfInLine", "a\nb\r\n.\r\n", true, 8, "a\r\nb\r\n"},
        DataCase{"BareCrInLine", "a\rb\r\n.\r\n", true, 8, "a\r\nb\r\n"},
        DataCase{"CrCrlfDotCrlf", "a\r\r\n.\r\n", true, 7, "a\r\n\r\n"},
        DataCase{"LfCrlfDotCrlf", "a\n\r\n.\r\n", true, 7, "a\r\n\r\n"},
        DataCase{"CrlfDotCrCrlfDotCrlf", "a\r\n.\r\r\n.\r\n", true, 10, "a\r\n.\r\n\r\n"},
        DataCase{"DotAfterBareLfNotUnstuffed", "a\n..b\r\n.\r\n", true, 10, "a\r\n..b\r\n"},
        DataCase{"OnlyBareLfs", "a\n.\n", false, 0, ""},
        DataCase{"OnlyBareCrs", "a\r.\r", false, 0, ""},
        DataCase{"StartLfDotLf", "\n.\n", false, 0, ""}),
    case_name);

TEST(DataReader, SizeLimitIsInclusive) {
  DataReader exact(10);
  const auto progress = exact.feed("12345678\r\n.\r\n");
  EXPECT_TRUE(progress.finished);
  EXPECT_FALSE(exact.too_big());
  EXPECT_EQ(exact.size(), 10u);
  EXPECT_EQ(exact.take_content(), "12345678\r\n");
}

TEST(DataReader, OverflowKeepsReadingToTheEndButStoresNothing) {
  DataReader reader(10);
  const std::string input = "0123456789\r\n" + std::string(5000, 'x') + "\r\n.\r\nQUIT\r\n";
  std::size_t consumed = 0;
  bool finished = false;
  for (char c : input) {
    const auto progress = reader.feed(std::string_view(&c, 1));
    consumed += progress.consumed;
    if (progress.finished) {
      finished = true;
      break;
    }
  }
  EXPECT_TRUE(finished);
  EXPECT_EQ(consumed, input.size() - 6);
  EXPECT_TRUE(reader.too_big());
  EXPECT_EQ(reader.size(), 12u + 5002u);
  EXPECT_EQ(reader.take_content(), "");
}

TEST(DataReader, FinishedReaderConsumesNothingMore) {
  DataReader reader(100);
  EXPECT_TRUE(reader.feed(".\r\n").finished);
  const auto progress = reader.feed("more\r\n");
  EXPECT_TRUE(progress.finished);
  EXPECT_EQ(progress.consumed, 0u);
}

TEST(DataReader, UnfinishedLineGetsCrlf) {
  DataReader reader(100);
  reader.feed("no line end");
  EXPECT_EQ(reader.take_content(), "no line end\r\n");
}

// Random inputs over the interesting alphabet, in random chunkings: the result
// never depends on how the bytes were split, and never holds a bare CR or LF.
TEST(DataReader, ChunkingNeverMatters) {
  std::mt19937 random(20261204);
  const std::string alphabet = "\r\n.a";
  for (int round = 0; round < 2000; ++round) {
    std::string input;
    const int length = std::uniform_int_distribution<int>(0, 40)(random);
    for (int i = 0; i < length; ++i) {
      input += alphabet[std::uniform_int_distribution<std::size_t>(0, alphabet.size() - 1)(random)];
    }
    const Outcome whole = feed_in_chunks(input, input.size() + 1);
    const Outcome bytes = feed_in_chunks(input, 1);
    const Outcome chunks = feed_in_chunks(input, 1 + round % 7);
    EXPECT_EQ(whole.finished, bytes.finished);
    EXPECT_EQ(whole.consumed, bytes.consumed);
    EXPECT_EQ(whole.content, bytes.content);
    EXPECT_EQ(whole.content, chunks.content);
    EXPECT_TRUE(only_crlf_line_ends(whole.content));
    if (whole.finished) {
      // The end of data is exactly the first literal <CRLF>.<CRLF> (the DATA
      // command's CRLF counts as the first one).
      const std::string framed = "\r\n" + input;
      EXPECT_EQ(framed.find("\r\n.\r\n") + 5, whole.consumed + 2) << testing::PrintToString(input);
    } else {
      EXPECT_EQ(("\r\n" + input).find("\r\n.\r\n"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace stsrelay::smtp
