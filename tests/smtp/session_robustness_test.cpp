// Properties that must hold for any input: bounded memory for endless lines,
// results independent of how the bytes were split, well-formed replies only.

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "smtp/server_session.hpp"
#include "tests/smtp/session_harness.hpp"

namespace {

// The largest single allocation made while tracking is on.
std::atomic<bool> tracking{false};
std::atomic<std::size_t> largest_allocation{0};

void note_allocation(std::size_t size) {
  if (!tracking.load(std::memory_order_relaxed)) {
    return;
  }
  std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !largest_allocation.compare_exchange_weak(seen, size)) {
  }
}

}  // namespace

void* operator new(std::size_t size) {
  note_allocation(size);
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace stsrelay::smtp {
namespace {

using testing::Client;
using testing::statuses;
using testing::Statuses;

TEST(SessionRobustness, EndlessLineIsDiscardedNotBuffered) {
  Client client;
  const std::string kilobyte(1024, 'A');
  client.send(kilobyte);  // the buffer reaches its steady size here
  largest_allocation = 0;
  tracking = true;
  std::string output;
  for (int i = 1; i < 100; ++i) {  // 100 KiB without an LF
    output += client.send(kilobyte);
  }
  tracking = false;
  EXPECT_EQ(output, "");
  // A buffer that kept the line would have grown past 64 KiB.
  EXPECT_LT(largest_allocation.load(), 4096u);
  EXPECT_EQ(statuses(client.send("\r\nNOOP\r\n")), (Statuses{"500 5.5.2", "250 2.0.0"}));
}

TEST(SessionRobustness, OversizedMessageIsNotBuffered) {
  Client client;
  client.send("EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<r@d.test>\r\nDATA\r\n");
  const std::string kilobyte = std::string(1022, 'B') + "\r\n";
  client.send(kilobyte);
  largest_allocation = 0;
  tracking = true;
  for (int i = 0; i < 200; ++i) {
    client.send(kilobyte);
  }
  tracking = false;
  EXPECT_LT(largest_allocation.load(), 8192u);
  EXPECT_EQ(client.send(".\r\n"), "552 5.3.4 Message too big\r\n");
}

TEST(SessionRobustness, ThousandsOfPipelinedCommandsInOneChunk) {
  Client client;
  std::string script = "EHLO c.test\r\nMAIL FROM:<>\r\n";
  for (int i = 0; i < 5000; ++i) {
    script += "RCPT TO:<r@d.test>\r\nRSET\r\nMAIL FROM:<>\r\n";
  }
  const Statuses got = statuses(client.send(script));
  ASSERT_EQ(got.size(), 2u + 3 * 5000u);
  EXPECT_EQ(got.back(), "250 2.1.0");
  EXPECT_EQ(client.last_event(), ServerSession::Event::need_input);
}

bool well_formed_replies(std::string_view wire) {
  while (!wire.empty()) {
    const std::size_t end = wire.find("\r\n");
    if (end == std::string_view::npos || end < 4) {
      return false;
    }
    const std::string_view line = wire.substr(0, end);
    for (std::size_t i = 0; i < 3; ++i) {
      if (line[i] < '0' || line[i] > '9') {
        return false;
      }
    }
    if (line[3] != ' ' && line[3] != '-') {
      return false;
    }
    if (line.find('\r') != std::string_view::npos || line.find('\n') != std::string_view::npos) {
      return false;
    }
    wire.remove_prefix(end + 2);
  }
  return true;
}

std::string random_script(std::mt19937& random) {
  static const std::vector<std::string> tokens{"EHLO c.test\r\n",
                                               "HELO c.test\r\n",
                                               "MAIL FROM:<s@c.test>\r\n",
                                               "MAIL FROM:<>\r\n",
                                               "MAIL FROM:<s@c.test> SIZE=5000\r\n",
                                               "RCPT TO:<r@d.test>\r\n",
                                               "RCPT TO:<postmaster>\r\n",
                                               "DATA\r\n",
                                               "RSET\r\n",
                                               "NOOP\r\n",
                                               "VRFY x\r\n",
                                               "HELP\r\n",
                                               "XYZZY\r\n",
                                               "AUTH x\r\n",
                                               ".\r\n",
                                               "..\r\n",
                                               ".",
                                               "\r\n",
                                               "\r",
                                               "\n",
                                               "text",
                                               "\xc3\xa9",
                                               std::string(300, 'z'),
                                               "MAIL FROM:<j\xc3\xb6@c.test> SMTPUTF8\r\n",
                                               "RCPT TO:<\xff@d.test>\r\n",
                                               "QUIT\r\n"};
  std::string script;
  const int count = std::uniform_int_distribution<int>(1, 40)(random);
  for (int i = 0; i < count; ++i) {
    // QUIT rarely, so that most scripts run long.
    std::size_t pick = std::uniform_int_distribution<std::size_t>(0, tokens.size() - 1)(random);
    if (pick == tokens.size() - 1 && random() % 8 != 0) {
      pick = 0;
    }
    script += tokens[pick];
  }
  return script;
}

TEST(SessionRobustness, SplittingNeverChangesTheOutcome) {
  std::mt19937 random(4242);
  for (int round = 0; round < 300; ++round) {
    const std::string script = random_script(random);
    auto settings = testing::test_settings();
    settings.max_errors = 10;
    Client whole(settings);
    Client trickled(settings);
    Client chunked(settings);
    const std::string expected = whole.send(script);
    EXPECT_TRUE(well_formed_replies(expected)) << ::testing::PrintToString(script);
    EXPECT_EQ(trickled.trickle(script), expected) << ::testing::PrintToString(script);
    std::string chunked_output;
    for (std::size_t at = 0; at < script.size();) {
      const std::size_t size = std::uniform_int_distribution<std::size_t>(1, 64)(random);
      chunked_output += chunked.send(std::string_view(script).substr(at, size));
      at += size;
    }
    EXPECT_EQ(chunked_output, expected) << ::testing::PrintToString(script);
    ASSERT_EQ(trickled.messages().size(), whole.messages().size());
    ASSERT_EQ(chunked.messages().size(), whole.messages().size());
    for (std::size_t i = 0; i < whole.messages().size(); ++i) {
      EXPECT_EQ(trickled.messages()[i].content, whole.messages()[i].content);
      EXPECT_EQ(chunked.messages()[i].content, whole.messages()[i].content);
    }
  }
}

TEST(SessionRobustness, ArbitraryBytesNeverBreakTheSession) {
  std::mt19937 random(99);
  for (int round = 0; round < 200; ++round) {
    Client client;
    std::string output;
    for (int chunk = 0; chunk < 20 && !client.session().closed(); ++chunk) {
      std::string bytes(std::uniform_int_distribution<std::size_t>(0, 200)(random), '\0');
      for (char& c : bytes) {
        c = static_cast<char>(random() % 4 == 0 ? "\r\n.:<>@ "[random() % 8] : random() % 256);
      }
      output += client.send(bytes);
    }
    EXPECT_TRUE(well_formed_replies(output));
  }
}

}  // namespace
}  // namespace stsrelay::smtp
