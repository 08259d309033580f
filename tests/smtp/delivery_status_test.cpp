#include "smtp/delivery_status.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

struct ReplyCase {
  Stage stage;
  int code;
  std::string enhanced;  // as the server sent it
  Disposition expected;
  std::string expected_enhanced;
};

class ClassifyReply : public ::testing::TestWithParam<ReplyCase> {};

TEST_P(ClassifyReply, DecidesByStageAndCode) {
  const ReplyCase& c = GetParam();
  Reply reply{c.code, c.enhanced, {"some text"}};
  DeliveryStatus status = classify_reply(c.stage, reply, "mx.b.test");
  EXPECT_EQ(status.disposition, c.expected)
      << to_string(c.stage) << " " << c.code << ": " << to_string(status.disposition);
  EXPECT_EQ(status.enhanced, c.expected_enhanced);
  EXPECT_EQ(status.code, c.code);
  EXPECT_EQ(status.stage, c.stage);
  EXPECT_EQ(status.remote_mta, "mx.b.test");
  EXPECT_EQ(status.text, "some text");
  EXPECT_TRUE(status.tls_result.empty());
  EXPECT_EQ(status.permanent(), c.expected == Disposition::bounce);
}

using D = Disposition;
INSTANTIATE_TEST_SUITE_P(Table, ClassifyReply,
                         ::testing::Values(
                             // The session stages: any failure is the host's.
                             ReplyCase{Stage::greeting, 220, "", D::delivered, "2.0.0"},
                             ReplyCase{Stage::greeting, 421, "", D::try_next_mx, "4.0.0"},
                             ReplyCase{Stage::greeting, 554, "5.7.1", D::try_next_mx, "5.7.1"},
                             ReplyCase{Stage::ehlo, 250, "", D::delivered, "2.0.0"},
                             ReplyCase{Stage::ehlo, 451, "", D::try_next_mx, "4.0.0"},
                             ReplyCase{Stage::ehlo, 550, "", D::try_next_mx, "5.0.0"},
                             ReplyCase{Stage::starttls, 454, "4.7.0", D::try_next_mx, "4.7.0"},
                             ReplyCase{Stage::starttls, 502, "5.5.1", D::try_next_mx, "5.5.1"},
                             // MAIL concerns every recipient.
                             ReplyCase{Stage::mail, 250, "2.1.0", D::delivered, "2.1.0"},
                             ReplyCase{Stage::mail, 451, "4.3.0", D::defer, "4.3.0"},
                             ReplyCase{Stage::mail, 452, "", D::defer, "4.0.0"},
                             ReplyCase{Stage::mail, 553, "5.1.8", D::bounce, "5.1.8"},
                             ReplyCase{Stage::mail, 550, "", D::bounce, "5.0.0"},
                             // RCPT concerns one.
                             ReplyCase{Stage::rcpt, 250, "2.1.5", D::delivered, "2.1.5"},
                             ReplyCase{Stage::rcpt, 251, "", D::delivered, "2.0.0"},
                             ReplyCase{Stage::rcpt, 450, "4.2.0", D::defer, "4.2.0"},
                             ReplyCase{Stage::rcpt, 421, "4.4.2", D::defer, "4.4.2"},
                             ReplyCase{Stage::rcpt, 550, "5.1.1", D::bounce, "5.1.1"},
                             ReplyCase{Stage::rcpt, 551, "", D::bounce, "5.0.0"},
                             // DATA goes on with 354, not 2xx.
                             ReplyCase{Stage::data, 354, "", D::delivered, "2.0.0"},
                             ReplyCase{Stage::data, 250, "", D::defer, "4.0.0"},
                             ReplyCase{Stage::data, 451, "", D::defer, "4.0.0"},
                             ReplyCase{Stage::data, 554, "5.5.1", D::bounce, "5.5.1"},
                             // The reply to the final dot.
                             ReplyCase{Stage::message, 250, "2.0.0", D::delivered, "2.0.0"},
                             ReplyCase{Stage::message, 452, "4.3.1", D::defer, "4.3.1"},
                             ReplyCase{Stage::message, 554, "", D::bounce, "5.0.0"},
                             ReplyCase{Stage::message, 552, "5.3.4", D::bounce, "5.3.4"},
                             ReplyCase{Stage::message, 354, "", D::defer, "4.0.0"}));

struct LocalCase {
  Stage stage;
  std::string tls_result;
  Disposition expected;
  std::string expected_enhanced;
};

class ClassifyLocalFailure : public ::testing::TestWithParam<LocalCase> {};

TEST_P(ClassifyLocalFailure, TriesTheNextHostUntilMailThenDefers) {
  const LocalCase& c = GetParam();
  DeliveryStatus status =
      classify_local_failure(c.stage, "what happened", "mx.b.test", c.tls_result);
  EXPECT_EQ(status.disposition, c.expected) << to_string(c.stage);
  EXPECT_EQ(status.enhanced, c.expected_enhanced) << to_string(c.stage);
  EXPECT_EQ(status.code, 0);
  EXPECT_EQ(status.text, "what happened");
  EXPECT_EQ(status.tls_result, c.tls_result);
  EXPECT_EQ(status.diagnostic(), c.expected_enhanced + " what happened")
      << "a failure found here reads as a server would put it";
}

INSTANTIATE_TEST_SUITE_P(
    Table, ClassifyLocalFailure,
    ::testing::Values(LocalCase{Stage::dns, "", D::try_next_mx, "4.4.3"},
                      LocalCase{Stage::policy, "", D::try_next_mx, "4.7.0"},
                      LocalCase{Stage::policy, "certificate-host-mismatch", D::try_next_mx,
                                "4.7.5"},
                      LocalCase{Stage::connect, "", D::try_next_mx, "4.4.1"},
                      LocalCase{Stage::greeting, "", D::try_next_mx, "4.4.2"},
                      LocalCase{Stage::ehlo, "", D::try_next_mx, "4.4.2"},
                      LocalCase{Stage::starttls, "", D::try_next_mx, "4.4.2"},
                      LocalCase{Stage::starttls, "starttls-not-supported", D::try_next_mx, "4.7.4"},
                      LocalCase{Stage::starttls, "certificate-expired", D::try_next_mx, "4.7.5"},
                      LocalCase{Stage::starttls, "validation-failure", D::try_next_mx, "4.7.5"},
                      LocalCase{Stage::mail, "", D::defer, "4.4.2"},
                      LocalCase{Stage::rcpt, "", D::defer, "4.4.2"},
                      LocalCase{Stage::data, "", D::defer, "4.4.2"},
                      LocalCase{Stage::message, "", D::defer, "4.4.2"}));

TEST(DeliveryStatus, DiagnosticShowsCodeEnhancedAndText) {
  Reply reply{550, "5.1.1", {"no such user"}};
  EXPECT_EQ(classify_reply(Stage::rcpt, reply, "mx").diagnostic(), "550 5.1.1 no such user");
  Reply plain{550, "", {"no such user"}};
  EXPECT_EQ(classify_reply(Stage::rcpt, plain, "mx").diagnostic(), "550 5.0.0 no such user");
}

TEST(DeliveryStatus, MultiLineRepliesAreJoined) {
  Reply reply{554, "5.7.1", {"rejected:", "see https://example.test/why"}};
  EXPECT_EQ(classify_reply(Stage::message, reply, "mx").text,
            "rejected: see https://example.test/why");
}

TEST(DeliveryStatus, LocalBounceCarriesItsCode) {
  DeliveryStatus status = make_local_bounce(Stage::mail, "5.3.4", "too big", "mx.b.test");
  EXPECT_TRUE(status.permanent());
  EXPECT_EQ(status.enhanced, "5.3.4");
  EXPECT_EQ(status.diagnostic(), "5.3.4 too big");
}

TEST(DeliveryStatus, NamesOfStagesAndDispositions) {
  EXPECT_EQ(to_string(Stage::starttls), "starttls");
  EXPECT_EQ(to_string(Stage::message), "message");
  EXPECT_EQ(to_string(Disposition::try_next_mx), "try_next_mx");
  EXPECT_EQ(to_string(Disposition::bounce), "bounce");
}

}  // namespace
}  // namespace stsrelay::smtp
