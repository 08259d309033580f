#include "smtp/dot_stuffing.hpp"

#include <string>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

struct StuffCase {
  std::string name;
  std::string content;
  std::string stuffed;
};

class DotStuff : public ::testing::TestWithParam<StuffCase> {};

TEST_P(DotStuff, ProducesTheDataOnTheWire) {
  EXPECT_EQ(dot_stuff(GetParam().content), GetParam().stuffed);
}

// Every split of the content into two pieces gives the same bytes: a CR at
// the end of one piece and its LF at the start of the next included.
TEST_P(DotStuff, InPiecesAsInOne) {
  const std::string& content = GetParam().content;
  for (std::size_t split = 0; split <= content.size(); ++split) {
    DotStuffer stuffer;
    std::string out;
    stuffer.feed(std::string_view(content).substr(0, split), out);
    stuffer.feed(std::string_view(content).substr(split), out);
    stuffer.finish(out);
    EXPECT_EQ(out, GetParam().stuffed) << "split at " << split;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, DotStuff,
    ::testing::Values(StuffCase{"empty", "", ".\r\n"},
                      StuffCase{"one_line", "hello\r\n", "hello\r\n.\r\n"},
                      StuffCase{"no_final_crlf", "hello", "hello\r\n.\r\n"},
                      StuffCase{"only_a_dot", ".\r\n", "..\r\n.\r\n"},
                      StuffCase{"only_a_dot_without_crlf", ".", "..\r\n.\r\n"},
                      StuffCase{"a_line_that_is_a_dot", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
                      StuffCase{"leading_dots", "..x\r\n.y\r\n", "...x\r\n..y\r\n.\r\n"},
                      StuffCase{"dot_inside_a_line", "a.b\r\n", "a.b\r\n.\r\n"},
                      StuffCase{"bare_lf", "a\nb\n", "a\r\nb\r\n.\r\n"},
                      StuffCase{"bare_cr", "a\rb", "a\r\nb\r\n.\r\n"},
                      StuffCase{"dot_after_bare_lf", "a\n.b", "a\r\n..b\r\n.\r\n"},
                      StuffCase{"cr_at_end", "a\r", "a\r\n.\r\n"},
                      StuffCase{"cr_cr_lf", "a\r\r\n", "a\r\n\r\n.\r\n"},
                      StuffCase{"empty_lines", "\r\n\r\n", "\r\n\r\n.\r\n"},
                      StuffCase{"headers_and_body", "Subject: x\r\n\r\n.\r\n..\r\nend",
                                "Subject: x\r\n\r\n..\r\n...\r\nend\r\n.\r\n"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace stsrelay::smtp
