#include "smtp/reply.hpp"

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

TEST(Reply, SingleLineCarriesTheEnhancedCode) {
  EXPECT_EQ(make_reply(250, "2.1.0", "Ok").wire(), "250 2.1.0 Ok\r\n");
}

TEST(Reply, MultiLineUsesDashContinuation) {
  const Reply reply{250, "", {"relay.test", "PIPELINING", "SIZE 10"}};
  EXPECT_EQ(reply.wire(), "250-relay.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
}

TEST(Reply, EnhancedCodeOnEveryLine) {
  const Reply reply{451, "4.3.0", {"first", "second"}};
  EXPECT_EQ(reply.wire(), "451-4.3.0 first\r\n451 4.3.0 second\r\n");
}

TEST(Reply, WithoutTextOrLines) {
  EXPECT_EQ((Reply{250, "2.0.0", {""}}).wire(), "250 2.0.0\r\n");
  EXPECT_EQ((Reply{221, "", {}}).wire(), "221 \r\n");
}

}  // namespace
}  // namespace stsrelay::smtp
