// The bulk-scanning DotStuffer and DataReader against the byte-at-a-time
// versions they replaced, kept here verbatim as the reference: for random
// inputs rich in ".", CR and LF, in random chunkings, the two must give the
// same bytes, the same progress for every feed and the same final state.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "smtp/data_reader.hpp"
#include "smtp/dot_stuffing.hpp"

namespace stsrelay::smtp {
namespace {

// ---- The reference: the byte-at-a-time implementations ----

class ReferenceDotStuffer {
 public:
  void feed(std::string_view chunk, std::string& out) {
    for (char c : chunk) {
      if (pending_cr_) {
        pending_cr_ = false;
        out += "\r\n";
        at_line_start_ = true;
        if (c == '\n') {
          continue;
        }
      }
      if (c == '\r') {
        pending_cr_ = true;
        continue;
      }
      if (c == '\n') {
        out += "\r\n";
        at_line_start_ = true;
        continue;
      }
      if (at_line_start_ && c == '.') {
        out += '.';
      }
      out += c;
      at_line_start_ = false;
    }
  }

  void finish(std::string& out) {
    if (pending_cr_ || !at_line_start_) {
      out += "\r\n";
    }
    pending_cr_ = false;
    at_line_start_ = true;
    out += ".\r\n";
  }

 private:
  bool at_line_start_ = true;
  bool pending_cr_ = false;
};

class ReferenceDataReader {
 public:
  explicit ReferenceDataReader(std::uint64_t max_size) : max_size_(max_size) {}

  DataReader::Progress feed(std::string_view bytes) {
    DataReader::Progress progress;
    while (progress.consumed < bytes.size() && state_ != State::finished) {
      if (state_ == State::in_line) {
        const std::string_view rest = bytes.substr(progress.consumed);
        const std::size_t run = std::min(rest.find_first_of("\r\n"), rest.size());
        if (run > 0) {
          store(rest.substr(0, run));
          progress.consumed += run;
          continue;
        }
      }
      step(bytes[progress.consumed]);
      ++progress.consumed;
    }
    progress.finished = state_ == State::finished;
    return progress;
  }

  bool finished() const { return state_ == State::finished; }
  bool too_big() const { return too_big_; }
  std::uint64_t size() const { return size_; }

  std::string take_content() {
    if (too_big_) {
      return {};
    }
    if (!content_.empty() && !content_.ends_with("\r\n")) {
      content_ += "\r\n";
    }
    return std::exchange(content_, {});
  }

 private:
  enum class State {
    line_start_after_crlf,
    line_start_after_bare_break,
    in_line,
    cr,
    dot,
    dot_cr,
    finished
  };

  void store(std::string_view bytes) {
    size_ += bytes.size();
    if (too_big_) {
      return;
    }
    if (size_ > max_size_) {
      too_big_ = true;
      std::string().swap(content_);
      return;
    }
    content_.append(bytes);
  }
  void store_line_break() { store("\r\n"); }
  void store_octet(char c) { store(std::string_view(&c, 1)); }

  void step(char c) {
    switch (state_) {
      case State::finished:
        return;
      case State::dot:
        if (c == '\r') {
          state_ = State::dot_cr;
          return;
        }
        if (c == '\n') {
          store(".");
          store_line_break();
          state_ = State::line_start_after_bare_break;
          return;
        }
        store_octet(c);
        state_ = State::in_line;
        return;
      case State::dot_cr:
        if (c == '\n') {
          state_ = State::finished;
          return;
        }
        store(".");
        store_line_break();
        state_ = State::line_start_after_bare_break;
        step(c);
        return;
      case State::cr:
        if (c == '\n') {
          store_line_break();
          state_ = State::line_start_after_crlf;
          return;
        }
        store_line_break();
        state_ = State::line_start_after_bare_break;
        step(c);
        return;
      case State::line_start_after_crlf:
        if (c == '.') {
          state_ = State::dot;
          return;
        }
        [[fallthrough]];
      case State::line_start_after_bare_break:
      case State::in_line:
        if (c == '\r') {
          state_ = State::cr;
        } else if (c == '\n') {
          store_line_break();
          state_ = State::line_start_after_bare_break;
        } else {
          store_octet(c);
          state_ = State::in_line;
        }
        return;
    }
  }

  std::uint64_t max_size_;
  std::uint64_t size_ = 0;
  bool too_big_ = false;
  State state_ = State::line_start_after_crlf;
  std::string content_;
};

// ---- Inputs and chunkings ----

// Pieces that meet at every kind of boundary: dots, CR, LF, the end of data,
// short and long runs of content, any octet.
std::string random_input(std::mt19937& random) {
  static const std::vector<std::string> pieces = {".",     "\r",     "\n",    "\r\n",  "\r\n.\r\n",
                                                  ".\r\n", "..",     "\n.\n", "\r.\r", "a",
                                                  "x.y",   "\r\r\n", "\n\r"};
  std::string input;
  const int count = std::uniform_int_distribution<int>(0, 60)(random);
  for (int i = 0; i < count; ++i) {
    switch (std::uniform_int_distribution<int>(0, 9)(random)) {
      case 0:
        input.append(std::uniform_int_distribution<std::size_t>(1, 300)(random), 'm');
        break;
      case 1:
        input += static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
        break;
      default:
        input += pieces[std::uniform_int_distribution<std::size_t>(0, pieces.size() - 1)(random)];
        break;
    }
  }
  return input;
}

// Chunk sizes covering the input: whole, octet by octet, or random.
std::vector<std::size_t> random_chunking(std::mt19937& random, std::size_t length) {
  std::vector<std::size_t> sizes;
  const int mode = std::uniform_int_distribution<int>(0, 3)(random);
  std::size_t covered = 0;
  while (covered < length) {
    std::size_t size = length - covered;
    if (mode == 1) {
      size = 1;
    } else if (mode == 2) {
      size = std::uniform_int_distribution<std::size_t>(1, 8)(random);
    } else if (mode == 3) {
      size = std::uniform_int_distribution<std::size_t>(0, 400)(random);  // empty chunks too
    }
    size = std::min(size, length - covered);
    sizes.push_back(size);
    covered += size;
  }
  return sizes;
}

constexpr int rounds = 20000;

TEST(StreamEquivalence, DotStufferMatchesTheReference) {
  std::mt19937 random(7);
  for (int round = 0; round < rounds; ++round) {
    const std::string input = random_input(random);
    const auto chunking = random_chunking(random, input.size());
    ReferenceDotStuffer reference;
    DotStuffer stuffer;
    std::string expected = "prefix";  // feed() appends to what is there
    std::string actual = expected;
    std::size_t at = 0;
    for (std::size_t size : chunking) {
      const std::string_view piece = std::string_view(input).substr(at, size);
      reference.feed(piece, expected);
      stuffer.feed(piece, actual);
      ASSERT_EQ(actual, expected) << testing::PrintToString(input) << " after " << at + size;
      at += size;
    }
    reference.finish(expected);
    stuffer.finish(actual);
    ASSERT_EQ(actual, expected) << testing::PrintToString(input);
    EXPECT_EQ("prefix" + dot_stuff(input), expected);
    // The state after finish() is the initial one again.
    reference.feed(".a\rb", expected);
    stuffer.feed(".a\rb", actual);
    ASSERT_EQ(actual, expected);
  }
}

TEST(StreamEquivalence, DataReaderMatchesTheReference) {
  std::mt19937 random(51764);
  for (int round = 0; round < rounds; ++round) {
    const std::string input = random_input(random);
    const auto chunking = random_chunking(random, input.size());
    // Mostly no limit; sometimes one the input crosses, at any point.
    const std::uint64_t max_size =
        round % 3 == 0 ? std::uniform_int_distribution<std::uint64_t>(0, input.size() + 2)(random)
                       : std::uint64_t{1} << 20;
    ReferenceDataReader reference(max_size);
    DataReader reader(max_size);
    std::size_t at = 0;
    for (std::size_t size : chunking) {
      const std::string_view piece = std::string_view(input).substr(at, size);
      const auto expected = reference.feed(piece);
      const auto actual = reader.feed(piece);
      ASSERT_EQ(actual.consumed, expected.consumed)
          << testing::PrintToString(input) << " at " << at;
      ASSERT_EQ(actual.finished, expected.finished)
          << testing::PrintToString(input) << " at " << at;
      ASSERT_EQ(reader.finished(), reference.finished());
      ASSERT_EQ(reader.too_big(), reference.too_big())
          << testing::PrintToString(input) << " at " << at;
      ASSERT_EQ(reader.size(), reference.size()) << testing::PrintToString(input) << " at " << at;
      at += expected.consumed;
      if (expected.finished) {
        break;
      }
    }
    // A probe that tells every state apart by what it stores and whether it
    // ends the data, then the content.
    const std::string_view probe = ".z\r\n.\r\n";
    for (std::size_t i = 0; i < probe.size(); ++i) {
      const auto expected = reference.feed(probe.substr(i, 1));
      const auto actual = reader.feed(probe.substr(i, 1));
      ASSERT_EQ(actual.consumed, expected.consumed) << testing::PrintToString(input);
      ASSERT_EQ(actual.finished, expected.finished) << testing::PrintToString(input);
      ASSERT_EQ(reader.size(), reference.size()) << testing::PrintToString(input);
    }
    ASSERT_EQ(reader.take_content(), reference.take_content()) << testing::PrintToString(input);
  }
}

// The probe above only sees the state at the end of the chunking; this sees it
// after every prefix, fed whole to the new reader and octet by octet to the
// reference.
TEST(StreamEquivalence, DataReaderStateAfterEveryPrefix) {
  std::mt19937 random(2023);
  for (int round = 0; round < 300; ++round) {
    const std::string input = random_input(random);
    for (std::size_t cut = 0; cut <= input.size(); ++cut) {
      ReferenceDataReader reference(1 << 20);
      DataReader reader(1 << 20);
      const std::string_view prefix = std::string_view(input).substr(0, cut);
      std::size_t expected_consumed = 0;
      for (char c : prefix) {
        expected_consumed += reference.feed(std::string_view(&c, 1)).consumed;
      }
      ASSERT_EQ(reader.feed(prefix).consumed, expected_consumed);
      const std::string_view rest = std::string_view(input).substr(cut);
      const auto expected = reference.feed(rest);
      const auto actual = reader.feed(rest);
      ASSERT_EQ(actual.consumed, expected.consumed)
          << testing::PrintToString(input) << " cut " << cut;
      ASSERT_EQ(actual.finished, expected.finished)
          << testing::PrintToString(input) << " cut " << cut;
      ASSERT_EQ(reader.take_content(), reference.take_content())
          << testing::PrintToString(input) << " cut " << cut;
    }
  }
}

}  // namespace
}  // namespace stsrelay::smtp
