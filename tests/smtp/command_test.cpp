#include "smtp/command.hpp"

#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

struct VerbCase {
  std::string line;
  Verb verb;
  std::string argument;
};

class VerbTable : public ::testing::TestWithParam<VerbCase> {};

TEST_P(VerbTable, Parses) {
  const auto command = parse_command(GetParam().line);
  EXPECT_EQ(command.verb, GetParam().verb) << GetParam().line;
  EXPECT_EQ(command.argument, GetParam().argument) << GetParam().line;
}

INSTANTIATE_TEST_SUITE_P(
    Verbs, VerbTable,
    ::testing::Values(
        VerbCase{"EHLO client.test", Verb::ehlo, "client.test"},
        VerbCase{"ehlo client.test", Verb::ehlo, "client.test"},
        VerbCase{"HeLo client.test", Verb::helo, "client.test"},
        VerbCase{"MAIL FROM:<a@b>", Verb::mail, "FROM:<a@b>"},
        VerbCase{"rcpt TO:<a@b>", Verb::rcpt, "TO:<a@b>"}, VerbCase{"DATA", Verb::data, ""},
        VerbCase{"data", Verb::data, ""}, VerbCase{"RSET", Verb::rset, ""},
        VerbCase{"NOOP whatever", Verb::noop, "whatever"}, VerbCase{"QUIT", Verb::quit, ""},
        VerbCase{"QUIT  ", Verb::quit, ""}, VerbCase{"VRFY someone", Verb::vrfy, "someone"},
        VerbCase{"HELP", Verb::help, ""}, VerbCase{"StartTLS", Verb::starttls, ""},
        VerbCase{"AUTH PLAIN AAAA", Verb::not_implemented, "PLAIN AAAA"},
        VerbCase{"BDAT 100 LAST", Verb::not_implemented, "100 LAST"},
        VerbCase{"EXPN list", Verb::not_implemented, "list"},
        VerbCase{"TURN", Verb::not_implemented, ""}, VerbCase{"ETRN x", Verb::not_implemented, "x"},
        VerbCase{"XYZZY", Verb::unknown, ""}, VerbCase{"", Verb::unknown, ""},
        VerbCase{"MAILFROM:<a@b>", Verb::unknown, ""},
        VerbCase{"GET / HTTP/1.1", Verb::unknown, "/ HTTP/1.1"},
        VerbCase{" MAIL FROM:<a@b>", Verb::unknown, "MAIL FROM:<a@b>"}));

struct MailCase {
  std::string argument;
  int code;  // 0 when accepted
  std::string enhanced;
  std::string sender = {};
};

class MailTable : public ::testing::TestWithParam<MailCase> {};

TEST_P(MailTable, Parses) {
  const MailCase& c = GetParam();
  const auto mail = parse_mail_argument(c.argument);
  if (c.code == 0) {
    ASSERT_TRUE(mail) << c.argument << ": " << mail.error().wire();
    EXPECT_EQ(mail->reverse_path.address, c.sender);
  } else {
    ASSERT_FALSE(mail) << c.argument;
    EXPECT_EQ(mail.error().code, c.code) << c.argument;
    EXPECT_EQ(mail.error().enhanced, c.enhanced) << c.argument;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Mail, MailTable,
    ::testing::Values(
        MailCase{"FROM:<a@b.test>", 0, "", "a@b.test"},
        MailCase{"from:<a@b.test>", 0, "", "a@b.test"},
        MailCase{"FROM: <a@b.test>", 0, "", "a@b.test"}, MailCase{"FROM:<>", 0, "", ""},
        MailCase{"FROM:<> SIZE=0", 0, "", ""},
        MailCase{"FROM:<a@b.test>  BODY=8BITMIME", 0, "", "a@b.test"},
        MailCase{"FROM:<a@b.test> body=8bitmime size=100 smtputf8", 0, "", "a@b.test"},
        MailCase{"FROM:a@b.test", 501, "5.5.4"}, MailCase{"FROM:", 501, "5.5.4"},
        MailCase{"", 501, "5.5.4"}, MailCase{"TO:<a@b.test>", 501, "5.5.4"},
        MailCase{"FROM <a@b.test>", 501, "5.5.4"}, MailCase{"FROM:<a@@b.test>", 501, "5.1.7"},
        MailCase{"FROM:<a@b.test", 501, "5.1.7"}, MailCase{"FROM:<postmaster>", 501, "5.1.7"},
        MailCase{"FROM:<a@b.test>x", 501, "5.1.7"},
        MailCase{"FROM:<" + std::string(65, 'a') + "@b.test>", 501, "5.1.7"},
        MailCase{"FROM:<a@b.test> SIZE", 501, "5.5.4"},
        MailCase{"FROM:<a@b.test> SIZE=", 501, "5.5.4"},
        MailCase{"FROM:<a@b.test> SIZE=12x", 501, "5.5.4"},
        MailCase{"FROM:<a@b.test> SIZE=-1", 501, "5.5.4"},
        MailCase{"FROM:<a@b.test> SIZE=1 SIZE=1", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> BODY=BINARYMIME", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> BODY=8BIT", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> BODY", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> BODY=7BIT BODY=7BIT", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> SMTPUTF8=yes", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> SMTPUTF8 SMTPUTF8", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> AUTH=<>", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> RET=FULL", 555, "5.5.4"},
        MailCase{"FROM:<a@b.test> =x", 501, "5.5.4"},
        MailCase{"FROM:<a@b.test> -X=1", 501, "5.5.4"}));

TEST(Mail, Parameters) {
  const auto mail = parse_mail_argument("FROM:<a@b.test> SIZE=12345 BODY=7bit SMTPUTF8");
  ASSERT_TRUE(mail);
  EXPECT_EQ(mail->parameters.size, 12345u);
  EXPECT_EQ(mail->parameters.body, BodyType::seven_bit);
  EXPECT_TRUE(mail->parameters.smtputf8);

  const auto plain = parse_mail_argument("FROM:<a@b.test>");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->parameters.size);
  EXPECT_EQ(plain->parameters.body, BodyType::unspecified);
  EXPECT_FALSE(plain->parameters.smtputf8);

  const auto eight = parse_mail_argument("FROM:<a@b.test> BODY=8BITMIME");
  ASSERT_TRUE(eight);
  EXPECT_EQ(eight->parameters.body, BodyType::eight_bit_mime);
}

TEST(Mail, HugeSizeSaturates) {
  const auto mail = parse_mail_argument("FROM:<a@b.test> SIZE=99999999999999999999");
  ASSERT_TRUE(mail);
  EXPECT_EQ(mail->parameters.size, std::numeric_limits<std::uint64_t>::max());
  EXPECT_FALSE(parse_mail_argument("FROM:<a@b.test> SIZE=999999999999999999999"));
}

struct RcptCase {
  std::string argument;
  int code;
  std::string enhanced;
  std::string recipient = {};
};

class RcptTable : public ::testing::TestWithParam<RcptCase> {};

TEST_P(RcptTable, Parses) {
  const RcptCase& c = GetParam();
  const auto path = parse_rcpt_argument(c.argument);
  if (c.code == 0) {
    ASSERT_TRUE(path) << c.argument << ": " << path.error().wire();
    EXPECT_EQ(path->address, c.recipient);
  } else {
    ASSERT_FALSE(path) << c.argument;
    EXPECT_EQ(path.error().code, c.code) << c.argument;
    EXPECT_EQ(path.error().enhanced, c.enhanced) << c.argument;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rcpt, RcptTable,
    ::testing::Values(RcptCase{"TO:<r@d.test>", 0, "", "r@d.test"},
                      RcptCase{"to: <r@d.test>", 0, "", "r@d.test"},
                      RcptCase{"TO:<postmaster>", 0, "", "postmaster"},
                      RcptCase{"TO:<@a.test,@b.test:r@d.test>", 0, "", "r@d.test"},
                      RcptCase{"TO:<>", 501, "5.1.3"}, RcptCase{"TO:<r@>", 501, "5.1.3"},
                      RcptCase{"TO:<r@d.test>>", 501, "5.1.3"},
                      RcptCase{"TO:r@d.test", 501, "5.5.4"},
                      RcptCase{"FROM:<r@d.test>", 501, "5.5.4"},
                      RcptCase{"TO:<r@d.test> NOTIFY=NEVER", 555, "5.5.4"},
                      RcptCase{"TO:<r@d.test> X", 555, "5.5.4"}));

}  // namespace
}  // namespace stsrelay::smtp
