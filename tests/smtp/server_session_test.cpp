#include "smtp/server_session.hpp"

#include <array>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "tests/smtp/session_harness.hpp"

namespace stsrelay::smtp {
namespace {

using testing::Client;
using testing::statuses;
using testing::Statuses;
using testing::test_settings;

const std::string ehlo_reply_with_starttls =
    "250-relay.test\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 1000\r\n"
    "250-8BITMIME\r\n"
    "250-SMTPUTF8\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250 STARTTLS\r\n";
const std::string ehlo_reply_without_starttls =
    "250-relay.test\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 1000\r\n"
    "250-8BITMIME\r\n"
    "250-SMTPUTF8\r\n"
    "250 ENHANCEDSTATUSCODES\r\n";

const std::string received_esmtp_one_recipient =
    "Received: from client.test ([192.0.2.1])\r\n"
    "\tby relay.test (stsrelay) with ESMTP id ID1\r\n"
    "\tfor <r@d.test>;\r\n"
    "\tFri, 04 Dec 2026 17:40:33 +0000\r\n";

const std::string envelope =
    "EHLO client.test\r\n"
    "MAIL FROM:<s@client.test>\r\n"
    "RCPT TO:<r@d.test>\r\n";

TEST(Session, GreetingEhloAndHelo) {
  Client client;
  EXPECT_EQ(client.greeting(), "220 relay.test ESMTP stsrelay\r\n");
  EXPECT_EQ(client.send("EHLO client.test\r\n"), ehlo_reply_with_starttls);
  EXPECT_EQ(client.send("HELO client.test\r\n"), "250 relay.test\r\n");
  EXPECT_EQ(client.last_event(), ServerSession::Event::need_input);
}

TEST(Session, GreetOnlyOnce) {
  Client client;
  client.session().greet();
  EXPECT_EQ(client.session().take_output(), "");
}

// --- every command in every state ---------------------------------------

struct StateSetup {
  std::string name;
  std::string script;
  bool tls = false;  // STARTTLS done, then the script
};

const std::array<StateSetup, 6> states{{
    {"greeted", ""},
    {"helo", "HELO client.test\r\n"},
    {"ehlo", "EHLO client.test\r\n"},
    {"mail", "EHLO client.test\r\nMAIL FROM:<s@client.test>\r\n"},
    {"rcpt", envelope},
    {"tls_ehlo", "EHLO client.test\r\n", true},
}};

struct MatrixRow {
  std::string command;
  std::array<std::string, 6> expected;  // per state, in the order above
};

const std::vector<MatrixRow> matrix{
    {"EHLO x.test", {"250", "250", "250", "250", "250", "250"}},
    {"HELO x.test", {"250", "250", "250", "250", "250", "250"}},
    {"ehlo x.test", {"250", "250", "250", "250", "250", "250"}},
    {"EHLO", {"501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4"}},
    {"HELO", {"501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4"}},
    {"MAIL FROM:<x@y.test>",
     {"503 5.5.1", "250 2.1.0", "250 2.1.0", "503 5.5.1", "503 5.5.1", "250 2.1.0"}},
    {"mail from:<x@y.test>",
     {"503 5.5.1", "250 2.1.0", "250 2.1.0", "503 5.5.1", "503 5.5.1", "250 2.1.0"}},
    {"RCPT TO:<x@y.test>",
     {"503 5.5.1", "503 5.5.1", "503 5.5.1", "250 2.1.5", "250 2.1.5", "503 5.5.1"}},
    {"DATA", {"503 5.5.1", "503 5.5.1", "503 5.5.1", "503 5.5.1", "354", "503 5.5.1"}},
    {"DATA x", {"501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4"}},
    {"RSET", {"250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0"}},
    {"RSET x", {"501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4"}},
    {"NOOP", {"250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0"}},
    {"NOOP x", {"250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0"}},
    {"QUIT", {"221 2.0.0", "221 2.0.0", "221 2.0.0", "221 2.0.0", "221 2.0.0", "221 2.0.0"}},
    {"VRFY x", {"252 2.0.0", "252 2.0.0", "252 2.0.0", "252 2.0.0", "252 2.0.0", "252 2.0.0"}},
    {"VRFY", {"501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4", "501 5.5.4"}},
    {"HELP", {"214 2.0.0", "214 2.0.0", "214 2.0.0", "214 2.0.0", "214 2.0.0", "214 2.0.0"}},
    {"STARTTLS", {"220 2.0.0", "220 2.0.0", "220 2.0.0", "503 5.5.1", "503 5.5.1", "503 5.5.1"}},
    {"AUTH PLAIN AGFAYg==",
     {"502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1"}},
    {"BDAT 10 LAST",
     {"502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1"}},
    {"EXPN list", {"502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1"}},
    {"TURN", {"502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1", "502 5.5.1"}},
    {"XYZZY", {"500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2"}},
    {"", {"500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2"}},
};

std::unique_ptr<Client> client_in(const StateSetup& state) {
  auto client = std::make_unique<Client>();
  if (state.tls) {
    client->send("EHLO client.test\r\nSTARTTLS\r\n");
    client->session().tls_started({"TLSv1.3", "TLS_AES_128_GCM_SHA256"});
  }
  client->send(state.script);
  return client;
}

TEST(SessionMatrix, EveryCommandInEveryState) {
  for (const MatrixRow& row : matrix) {
    for (std::size_t i = 0; i < states.size(); ++i) {
      SCOPED_TRACE("state " + states[i].name + ", command '" + row.command + "'");
      auto client = client_in(states[i]);
      const Statuses got = statuses(client->send(row.command + "\r\n"));
      EXPECT_EQ(got, Statuses{row.expected[i]});
    }
  }
}

// --- sequences ------------------------------------------------------------

struct SequenceCase {
  std::string name;
  std::string script;
  Statuses expected;
};

class SessionSequences : public ::testing::TestWithParam<SequenceCase> {};

TEST_P(SessionSequences, RepliesInOrder) {
  Client client;
  EXPECT_EQ(statuses(client.send(GetParam().script)), GetParam().expected);
}

std::string sequence_name(const ::testing::TestParamInfo<SequenceCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(
    OutOfOrder, SessionSequences,
    ::testing::Values(
        SequenceCase{"RsetClearsTransaction",
                     envelope + "RSET\r\nDATA\r\nRCPT TO:<r@d.test>\r\n",
                     {"250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "503 5.5.1", "503 5.5.1"}},
        SequenceCase{"RsetKeepsEhlo",
                     "EHLO c.test\r\nRSET\r\nMAIL FROM:<s@c.test>\r\n",
                     {"250", "250 2.0.0", "250 2.1.0"}},
        SequenceCase{"EhloResetsTransaction",
                     envelope + "EHLO c.test\r\nDATA\r\nRCPT TO:<r@d.test>\r\n",
                     {"250", "250 2.1.0", "250 2.1.5", "250", "503 5.5.1", "503 5.5.1"}},
        SequenceCase{"HeloResetsTransaction",
                     envelope + "HELO c.test\r\nDATA\r\n",
                     {"250", "250 2.1.0", "250 2.1.5", "250", "503 5.5.1"}},
        SequenceCase{"AllRecipientsRejected",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<bad@>\r\nDATA\r\n",
                     {"250", "250 2.1.0", "501 5.1.3", "554 5.5.1"}},
        SequenceCase{"NestedMail",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test>\r\nMAIL FROM:<t@c.test>\r\n",
                     {"250", "250 2.1.0", "503 5.5.1"}},
        SequenceCase{"MailAfterRejectedMail",
                     "EHLO c.test\r\nMAIL FROM:<s@>\r\nMAIL FROM:<s@c.test>\r\n",
                     {"250", "501 5.1.7", "250 2.1.0"}},
        SequenceCase{"NullSender",
                     "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<r@d.test>\r\n",
                     {"250", "250 2.1.0", "250 2.1.5"}},
        SequenceCase{"NullRecipient",
                     "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<>\r\n",
                     {"250", "250 2.1.0", "501 5.1.3"}},
        SequenceCase{"Postmaster",
                     "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n",
                     {"250", "250 2.1.0", "250 2.1.5"}},
        SequenceCase{"SpaceAfterColon",
                     "EHLO c.test\r\nMAIL FROM: <s@c.test>\r\nRCPT TO: <r@d.test>\r\n",
                     {"250", "250 2.1.0", "250 2.1.5"}},
        SequenceCase{"BareLfCommands",
                     "EHLO c.test\nMAIL FROM:<s@c.test>\nNOOP\n",
                     {"250", "250 2.1.0", "250 2.0.0"}},
        SequenceCase{"BareCrInCommand",
                     "NO\rOP\r\nNOOP\r\r\nNOOP\r\n",
                     {"500 5.5.2", "500 5.5.2", "250 2.0.0"}},
        SequenceCase{"RcptParameter",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<r@d.test> NOTIFY=NEVER\r\n",
                     {"250", "250 2.1.0", "555 5.5.4"}},
        SequenceCase{"MailBeforeHeloAfterRejectedHelo",
                     "EHLO\r\nMAIL FROM:<s@c.test>\r\n",
                     {"501 5.5.4", "503 5.5.1"}},
        SequenceCase{"QuitEndsEverything", "QUIT\r\nNOOP\r\nNOOP\r\n", {"221 2.0.0"}}),
    sequence_name);

INSTANTIATE_TEST_SUITE_P(
    BodyAndSize, SessionSequences,
    ::testing::Values(
        SequenceCase{
            "Body7bit", "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=7BIT\r\n", {"250", "250 2.1.0"}},
        SequenceCase{"Body8bitmime",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=8BITMIME\r\n",
                     {"250", "250 2.1.0"}},
        SequenceCase{"BodyBinarymime",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=BINARYMIME\r\n",
                     {"250", "555 5.5.4"}},
        SequenceCase{"BodyUnknown",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=9BIT\r\n",
                     {"250", "555 5.5.4"}},
        SequenceCase{"UnknownParameter",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> FOO=1\r\n",
                     {"250", "555 5.5.4"}},
        SequenceCase{"DuplicateParameter",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1 SIZE=2\r\n",
                     {"250", "555 5.5.4"}},
        SequenceCase{"SizeAtLimit",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1000\r\n",
                     {"250", "250 2.1.0"}},
        SequenceCase{"SizeOverLimit",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1001\r\nRCPT TO:<r@d.test>\r\n",
                     {"250", "552 5.3.4", "503 5.5.1"}},
        SequenceCase{"SizeAbsurd",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=99999999999999999999\r\n",
                     {"250", "552 5.3.4"}}),
    sequence_name);

INSTANTIATE_TEST_SUITE_P(
    Smtputf8, SessionSequences,
    ::testing::Values(
        SequenceCase{"Utf8SenderWithout",
                     "EHLO c.test\r\nMAIL FROM:<j\xc3\xb6rg@c.test>\r\n",
                     {"250", "553 5.6.7"}},
        SequenceCase{"Utf8SenderWith",
                     "EHLO c.test\r\nMAIL FROM:<j\xc3\xb6rg@c.test> SMTPUTF8\r\n",
                     {"250", "250 2.1.0"}},
        SequenceCase{"Utf8DomainWith",
                     "EHLO c.test\r\nMAIL FROM:<s@b\xc3\xbc\x63her.test> SMTPUTF8\r\n",
                     {"250", "250 2.1.0"}},
        SequenceCase{"Utf8RecipientWithout",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test>\r\nRCPT TO:<\xe7\x94\xa8@d.test>\r\n",
                     {"250", "250 2.1.0", "553 5.6.7"}},
        SequenceCase{
            "Utf8RecipientWith",
            "EHLO c.test\r\nMAIL FROM:<s@c.test> SMTPUTF8\r\nRCPT TO:<\xe7\x94\xa8@d.test>\r\n",
            {"250", "250 2.1.0", "250 2.1.5"}},
        SequenceCase{"InvalidUtf8Sender",
                     "EHLO c.test\r\nMAIL FROM:<\xc3@c.test> SMTPUTF8\r\n",
                     {"250", "501 5.1.7"}},
        SequenceCase{"InvalidUtf8Recipient",
                     "EHLO c.test\r\nMAIL FROM:<s@c.test> SMTPUTF8\r\nRCPT TO:<\xff@d.test>\r\n",
                     {"250", "250 2.1.0", "501 5.1.3"}}),
    sequence_name);

// --- a whole transaction --------------------------------------------------

TEST(Session, MessageFieldsAndContent) {
  Client client;
  const std::string output = client.send(
      "EHLO client.test\r\n"
      "MAIL FROM:<s@client.test> BODY=8BITMIME\r\n"
      "RCPT TO:<r@d.test>\r\n"
      "DATA\r\n");
  EXPECT_EQ(statuses(output), (Statuses{"250", "250 2.1.0", "250 2.1.5", "354"}));
  EXPECT_TRUE(output.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
  EXPECT_TRUE(client.session().in_data());

  EXPECT_EQ(client.send("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"),
            "250 2.0.0 Ok: queued as ID1\r\n");
  EXPECT_FALSE(client.session().in_data());
  ASSERT_EQ(client.messages().size(), 1u);
  const ReceivedMessage& message = client.messages()[0];
  EXPECT_EQ(message.id, "ID1");
  EXPECT_EQ(message.client_address, "192.0.2.1");
  EXPECT_EQ(message.helo, "client.test");
  EXPECT_EQ(message.sender, "s@client.test");
  EXPECT_EQ(message.recipients, std::vector<std::string>{"r@d.test"});
  EXPECT_EQ(message.body, BodyType::eight_bit_mime);
  EXPECT_FALSE(message.smtputf8);
  EXPECT_FALSE(message.over_tls);
  EXPECT_EQ(message.content, received_esmtp_one_recipient + "Subject: hi\r\n\r\n.dot\r\nbody\r\n");
}

TEST(Session, NullSenderSeveralRecipientsHelo) {
  Client client;
  client.send(
      "HELO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<b@e.test>\r\n"
      "DATA\r\n.\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  const ReceivedMessage& message = client.messages()[0];
  EXPECT_EQ(message.sender, "");
  EXPECT_EQ(message.recipients, (std::vector<std::string>{"a@d.test", "b@e.test"}));
  EXPECT_EQ(message.body, BodyType::unspecified);
  EXPECT_EQ(message.content,
            "Received: from client.test ([192.0.2.1])\r\n"
            "\tby relay.test (stsrelay) with SMTP id ID1;\r\n"
            "\tFri, 04 Dec 2026 17:40:33 +0000\r\n");
}

TEST(Session, Smtputf8MessageAndIpv6Client) {
  Client client(test_settings(), "2001:db8::25");
  client.send(
      "EHLO client.test\r\nMAIL FROM:<j\xc3\xb6rg@client.test> SMTPUTF8 BODY=7BIT\r\n"
      "RCPT TO:<\xe7\x94\xa8@d.test>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  const ReceivedMessage& message = client.messages()[0];
  EXPECT_TRUE(message.smtputf8);
  EXPECT_EQ(message.body, BodyType::seven_bit);
  EXPECT_EQ(message.sender, "j\xc3\xb6rg@client.test");
  EXPECT_EQ(message.content,
            "Received: from client.test ([IPv6:2001:db8::25])\r\n"
            "\tby relay.test (stsrelay) with UTF8SMTP id ID1\r\n"
            "\tfor <\xe7\x94\xa8@d.test>;\r\n"
            "\tFri, 04 Dec 2026 17:40:33 +0000\r\n"
            "x\r\n");
}

TEST(Session, HeloIsFirstWordAndSanitisedInReceived) {
  Client client;
  client.send(
      "EHLO we(ird)\x01name extra words\r\nMAIL FROM:<>\r\nRCPT TO:<r@d.test>\r\nDATA\r\n.\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  EXPECT_EQ(client.messages()[0].helo, "we(ird)\x01name");
  EXPECT_TRUE(
      client.messages()[0].content.starts_with("Received: from we?ird??name ([192.0.2.1])\r\n"));
}

TEST(Session, PipelinedTransactionInOneChunk) {
  Client client;
  const std::string output = client.send(envelope +
                                         "RCPT TO:<r2@d.test>\r\n"
                                         "DATA\r\n"
                                         "line one\r\n"
                                         ".\r\n"
                                         "MAIL FROM:<>\r\n"
                                         "RCPT TO:<r3@d.test>\r\n"
                                         "DATA\r\n"
                                         "second\r\n"
                                         ".\r\n"
                                         "QUIT\r\n");
  EXPECT_EQ(statuses(output),
            (Statuses{"250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "250 2.0.0", "250 2.1.0",
                      "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"}));
  EXPECT_NE(output.find("250 2.0.0 Ok: queued as ID1\r\n"), std::string::npos);
  EXPECT_NE(output.find("250 2.0.0 Ok: queued as ID2\r\n"), std::string::npos);
  EXPECT_EQ(client.last_event(), ServerSession::Event::close);
  ASSERT_EQ(client.messages().size(), 2u);
  EXPECT_TRUE(client.messages()[0].content.ends_with("\r\nline one\r\n"));
  EXPECT_EQ(client.messages()[1].recipients, std::vector<std::string>{"r3@d.test"});
  EXPECT_TRUE(client.messages()[1].content.ends_with("\r\nsecond\r\n"));
}

TEST(Session, ByteAtATimeEqualsOneChunk) {
  const std::string script = envelope +
                             "DATA\r\n"
                             "..stuffed\r\n"
                             "bare\rcr and bare\nlf\r\n"
                             "\r\n.\r\n"
                             "NOOP\r\n"
                             "NOOP " +
                             std::string(600, 'x') +
                             "\r\n"
                             "MAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n.\r\n"
                             "QUIT\r\n";
  Client whole;
  Client trickled;
  const std::string whole_output = whole.send(script);
  EXPECT_EQ(trickled.trickle(script), whole_output);
  EXPECT_EQ(statuses(whole_output),
            (Statuses{"250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0", "500 5.5.2",
                      "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"}));
  ASSERT_EQ(whole.messages().size(), 2u);
  ASSERT_EQ(trickled.messages().size(), 2u);
  EXPECT_EQ(whole.messages()[0].content,
            received_esmtp_one_recipient + ".stuffed\r\nbare\r\ncr and bare\r\nlf\r\n\r\n");
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(trickled.messages()[i].content, whole.messages()[i].content);
  }
}

TEST(Session, EmptyMessageRightAfterData) {
  Client client;
  client.send(envelope + "DATA\r\n");
  EXPECT_EQ(client.send(".\r\n"), "250 2.0.0 Ok: queued as ID1\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  EXPECT_EQ(client.messages()[0].content, received_esmtp_one_recipient);
}

TEST(Session, SmugglingAttemptStaysInsideTheMessage) {
  Client client;
  const std::string output = client.send(envelope +
                                         "DATA\r\n"
                                         "Subject: a\r\n\r\n"
                                         "x\n.\n"
                                         "MAIL FROM:<evil@x.test>\r\n"
                                         "RCPT TO:<victim@y.test>\r\n"
                                         "DATA\r\n"
                                         "y\r\n.\r\n");
  EXPECT_EQ(statuses(output), (Statuses{"250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"}));
  ASSERT_EQ(client.messages().size(), 1u);
  EXPECT_EQ(client.messages()[0].content,
            received_esmtp_one_recipient +
                "Subject: a\r\n\r\nx\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n"
                "DATA\r\ny\r\n");
}

TEST(Session, IdIsTakenWhenDataIsAccepted) {
  int calls = 0;
  auto settings = test_settings();
  settings.new_message_id = [&calls] { return "Q" + std::to_string(++calls); };
  Client client(settings);
  client.send("EHLO c.test\r\nMAIL FROM:<>\r\nDATA\r\nRCPT TO:<r@d.test>\r\n");
  EXPECT_EQ(calls, 0);
  client.send("DATA\r\n");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(client.send(".\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
}

// --- limits -------------------------------------------------------------

std::string noop_line(std::size_t total_octets, std::string_view terminator = "\r\n") {
  return "NOOP " + std::string(total_octets - 5 - terminator.size(), 'x') + std::string(terminator);
}

TEST(Session, CommandLineLimitIs512OctetsWithCrlf) {
  for (const auto& [octets, expected] : std::vector<std::pair<std::size_t, std::string>>{
           {511, "250 2.0.0"}, {512, "250 2.0.0"}, {513, "500 5.5.2"}, {2000, "500 5.5.2"}}) {
    SCOPED_TRACE(octets);
    for (std::string_view terminator : {"\r\n", "\n"}) {
      Client client;
      EXPECT_EQ(statuses(client.send(noop_line(octets, terminator) + "NOOP\r\n")),
                (Statuses{expected, "250 2.0.0"}));
      Client trickled;
      EXPECT_EQ(statuses(trickled.trickle(noop_line(octets, terminator) + "NOOP\r\n")),
                (Statuses{expected, "250 2.0.0"}));
    }
  }
}

TEST(Session, LongLineRepliesOnceWhenItsLfArrives) {
  Client client;
  EXPECT_EQ(client.send(std::string(600, 'A')), "");
  EXPECT_EQ(client.send(std::string(600, 'A')), "");
  EXPECT_EQ(client.send("A\r"), "");
  EXPECT_EQ(statuses(client.send("\nNOOP\r\n")), (Statuses{"500 5.5.2", "250 2.0.0"}));
}

TEST(Session, DeclaredSizeOverLimit) {
  Client client;
  EXPECT_EQ(client.send("EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1001\r\n"),
            ehlo_reply_with_starttls + "552 5.3.4 Message size exceeds fixed limit\r\n");
}

TEST(Session, ActualSizeOverLimitQueuesNothing) {
  Client client;
  client.send(envelope + "DATA\r\n");
  const std::string line(98, 'x');
  std::string body;
  for (int i = 0; i < 11; ++i) {
    body += line + "\r\n";  // 1100 octets
  }
  EXPECT_EQ(client.trickle(body), "");
  EXPECT_EQ(client.send(".\r\nRCPT TO:<r@d.test>\r\nMAIL FROM:<s@c.test>\r\n"),
            "552 5.3.4 Message too big\r\n"
            "503 5.5.1 Error: need MAIL command\r\n"
            "250 2.1.0 Ok\r\n");
  EXPECT_TRUE(client.messages().empty());
}

TEST(Session, SizeExactlyAtLimitIsAccepted) {
  Client client;
  client.send(envelope + "DATA\r\n");
  const std::string body = std::string(998, 'y') + "\r\n";
  EXPECT_EQ(client.send(body + ".\r\n"), "250 2.0.0 Ok: queued as ID1\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
}

TEST(Session, TooManyRecipients) {
  Client client;
  const std::string output = client.send(
      "EHLO c.test\r\nMAIL FROM:<s@c.test>\r\n"
      "RCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\n"
      "DATA\r\n.\r\n");
  EXPECT_EQ(statuses(output), (Statuses{"250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5",
                                        "452 4.5.3", "354", "250 2.0.0"}));
  EXPECT_NE(output.find("452 4.5.3 Too many recipients\r\n"), std::string::npos);
  ASSERT_EQ(client.messages().size(), 1u);
  EXPECT_EQ(client.messages()[0].recipients.size(), 3u);
}

TEST(Session, TooManyErrorsCloses) {
  auto settings = test_settings();
  settings.max_errors = 3;
  Client client(settings);
  EXPECT_EQ(client.send("XYZZY\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\nDATA\r\nNOOP\r\nNOOP\r\n"),
            "500 5.5.2 Error: command not recognized\r\n"
            "250 2.0.0 Ok\r\n"
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
            "503 5.5.1 Error: need RCPT command\r\n"
            "421 4.7.0 Too many errors\r\n");
  EXPECT_EQ(client.last_event(), ServerSession::Event::close);
  EXPECT_TRUE(client.session().closed());
  EXPECT_EQ(client.send("NOOP\r\n"), "");
  EXPECT_EQ(client.session().next(), ServerSession::Event::close);
}

TEST(Session, DeliveredMailForgivesEarlierErrors) {
  auto settings = test_settings();
  settings.max_errors = 2;
  Client client(settings);
  client.send("XYZZY\r\n" + envelope + "DATA\r\n.\r\nXYZZY\r\n");
  EXPECT_FALSE(client.session().closed());
  client.send("XYZZY\r\n");
  EXPECT_TRUE(client.session().closed());
}

// --- commit outcomes ----------------------------------------------------

TEST(Session, MessageFailedKeepsEhloAndResetsEnvelope) {
  Client client;
  client.fail_next_commit();
  EXPECT_EQ(
      client.send(envelope + "DATA\r\nx\r\n.\r\nRCPT TO:<r@d.test>\r\nMAIL FROM:<s@c.test>\r\n"),
      ehlo_reply_with_starttls +
          "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
          "451 4.3.0 Error: queue unavailable\r\n"
          "503 5.5.1 Error: need MAIL command\r\n"
          "250 2.1.0 Ok\r\n");
  EXPECT_EQ(client.messages().size(), 1u);
}

TEST(Session, MessageFailedReasonIsOneLine) {
  ServerSession session(test_settings(), "192.0.2.1");
  session.receive(envelope + "DATA\r\n.\r\n");
  ASSERT_EQ(session.next(), ServerSession::Event::message_ready);
  session.take_output();
  session.take_message();
  session.message_failed("disk\r\nfull");
  EXPECT_EQ(session.take_output(), "451 4.3.0 disk  full\r\n");
}

TEST(Session, NothingIsProcessedWhileTheCommitIsPending) {
  ServerSession session(test_settings(), "192.0.2.1");
  session.greet();
  session.receive(envelope + "DATA\r\nbody\r\n.\r\nNOOP\r\n");
  EXPECT_EQ(session.next(), ServerSession::Event::message_ready);
  EXPECT_EQ(statuses(session.take_output()),
            (Statuses{"220", "250", "250 2.1.0", "250 2.1.5", "354"}));
  EXPECT_EQ(session.next(), ServerSession::Event::message_ready) << "not taken yet";
  const ReceivedMessage message = session.take_message();
  EXPECT_EQ(message.id, "ID1");
  EXPECT_EQ(session.next(), ServerSession::Event::need_input);
  session.receive("NOOP\r\n");
  EXPECT_EQ(session.next(), ServerSession::Event::need_input);
  EXPECT_EQ(session.take_output(), "");
  session.message_queued();
  EXPECT_EQ(session.next(), ServerSession::Event::need_input);
  EXPECT_EQ(session.take_output(),
            "250 2.0.0 Ok: queued as ID1\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
}

TEST(Session, StrayCommitCallsAreIgnored) {
  Client client;
  client.session().message_queued();
  client.session().message_failed("x");
  EXPECT_EQ(client.session().take_output(), "");
}

// --- STARTTLS -----------------------------------------------------------

TEST(Session, StartTlsDiscardsPipelinedPlaintext) {
  Client client;
  const std::string output = client.send(
      "EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<e@x.test>\r\n");
  EXPECT_EQ(output, ehlo_reply_with_starttls + "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(client.last_event(), ServerSession::Event::start_tls);
  // Plaintext that arrives before the handshake is done is dropped as well.
  client.session().receive("DATA\r\n");
  EXPECT_EQ(client.session().next(), ServerSession::Event::start_tls);
  EXPECT_EQ(client.session().take_output(), "");

  client.session().tls_started({"TLSv1.3", "TLS_AES_256_GCM_SHA384"});
  EXPECT_EQ(client.session().take_output(), "") << "no second greeting (RFC 3207)";
  // EHLO was forgotten, and no injected command took effect.
  EXPECT_EQ(client.send("MAIL FROM:<s@c.test>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
  EXPECT_EQ(client.send("EHLO client.test\r\n"), ehlo_reply_without_starttls);
  EXPECT_EQ(statuses(client.send("RCPT TO:<r@d.test>\r\nSTARTTLS\r\n")),
            (Statuses{"503 5.5.1", "503 5.5.1"}));
  client.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<r@d.test>\r\nDATA\r\nhi\r\n.\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  const ReceivedMessage& message = client.messages()[0];
  EXPECT_TRUE(message.over_tls);
  EXPECT_EQ(message.sender, "s@client.test");
  EXPECT_EQ(message.content,
            "Received: from client.test ([192.0.2.1])\r\n"
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
            "\tby relay.test (stsrelay) with ESMTPS id ID1\r\n"
            "\tfor <r@d.test>;\r\n"
            "\tFri, 04 Dec 2026 17:40:33 +0000\r\n"
            "hi\r\n");
}

TEST(Session, StartTlsProtocolWithSmtputf8) {
  Client client;
  client.send("EHLO client.test\r\nSTARTTLS\r\n");
  client.session().tls_started({"TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"});
  client.send(
      "EHLO client.test\r\nMAIL FROM:<s@c.test> SMTPUTF8\r\nRCPT TO:<a@d.test>\r\n"
      "RCPT TO:<b@d.test>\r\nDATA\r\n.\r\n");
  ASSERT_EQ(client.messages().size(), 1u);
  EXPECT_NE(
      client.messages()[0].content.find("\tby relay.test (stsrelay) with UTF8SMTPS id ID1;\r\n"),
      std::string::npos);
}

TEST(Session, StartTlsNotOffered) {
  auto settings = test_settings();
  settings.starttls_offered = false;
  Client client(settings);
  EXPECT_EQ(client.send("EHLO client.test\r\n"), ehlo_reply_without_starttls);
  EXPECT_EQ(client.send("STARTTLS\r\nNOOP\r\n"),
            "502 5.5.1 Error: command not implemented\r\n250 2.0.0 Ok\r\n");
  EXPECT_EQ(client.last_event(), ServerSession::Event::need_input);
}

TEST(Session, StartTlsWithArgument) {
  Client client;
  EXPECT_EQ(statuses(client.send("EHLO c.test\r\nSTARTTLS now\r\n")),
            (Statuses{"250", "501 5.5.4"}));
}

// --- ending the session from outside ------------------------------------

TEST(Session, TimedOut) {
  Client client;
  client.send("EHLO c.test\r\n");
  client.session().timed_out();
  EXPECT_EQ(client.session().take_output(), "421 4.4.2 relay.test Error: timeout exceeded\r\n");
  EXPECT_TRUE(client.session().closed());
  EXPECT_EQ(client.session().next(), ServerSession::Event::close);
  client.session().timed_out();
  EXPECT_EQ(client.session().take_output(), "");
}

TEST(Session, ShuttingDownInTheMiddleOfData) {
  Client client;
  client.send(envelope + "DATA\r\npartial\r\n");
  ASSERT_TRUE(client.session().in_data());
  client.session().shutting_down();
  EXPECT_EQ(client.session().take_output(), "421 4.3.2 relay.test Service shutting down\r\n");
  EXPECT_FALSE(client.session().in_data());
  EXPECT_EQ(client.send("rest\r\n.\r\n"), "");
  EXPECT_EQ(client.last_event(), ServerSession::Event::close);
  EXPECT_TRUE(client.messages().empty());
}

TEST(Session, MovedSessionKeepsWorking) {
  ServerSession first(test_settings(), "192.0.2.1");
  first.greet();
  ServerSession second = std::move(first);
  second.receive("NOOP\r\n");
  EXPECT_EQ(second.next(), ServerSession::Event::need_input);
  EXPECT_EQ(second.take_output(), "220 relay.test ESMTP stsrelay\r\n250 2.0.0 Ok\r\n");
}

}  // namespace
}  // namespace stsrelay::smtp
