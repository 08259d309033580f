#include "tests/support/fake_smtp_server.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/smtp_test_client.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"

// The fake MX host itself, driven by the blocking test client: the delivery
// tests rely on what it records being exactly what was sent.
namespace stsrelay::testing {
namespace {

using Then = FakeSmtpRule::Then;

SmtpTestClient::Reply greet(SmtpTestClient& client) {
  EXPECT_EQ(client.read_reply().code, 220);
  return client.command("EHLO client.test");
}

TEST(FakeSmtpServer, RecordsTheEnvelopeAndTheDataByteExact) {
  FakeSmtpServer server({});
  SmtpTestClient client(server.endpoint());
  greet(client);
  EXPECT_EQ(client.command("MAIL FROM:<sender@a.test> SIZE=42 BODY=8BITMIME").code, 250);
  EXPECT_EQ(client.command("RCPT TO:<one@b.test>").code, 250);
  EXPECT_EQ(client.command("RCPT TO:<two@b.test> NOTIFY=NEVER").code, 250);
  EXPECT_EQ(client.command("DATA").code, 354);
  client.send("Subject: dots\r\n\r\n..leading dot\r\nnot the end\r\n...\r\nbare\nlf\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  EXPECT_EQ(client.command("QUIT").code, 221);

  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].sender, "sender@a.test");
  EXPECT_EQ(messages[0].mail_parameters, (std::vector<std::string>{"SIZE=42", "BODY=8BITMIME"}));
  EXPECT_EQ(messages[0].recipients, (std::vector<std::string>{"one@b.test", "two@b.test"}));
  EXPECT_EQ(messages[0].data,
            "Subject: dots\r\n\r\n.leading dot\r\nnot the end\r\n..\r\nbare\nlf\r\n");
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].ehlo_name, "client.test");
  EXPECT_TRUE(sessions[0].quit);
  EXPECT_FALSE(sessions[0].tls);
  EXPECT_EQ(sessions[0].client_address, "127.0.0.1");
  EXPECT_EQ(sessions[0].commands.back(), "QUIT");
}

TEST(FakeSmtpServer, UnstuffsEveryLeadingDot) {
  FakeSmtpServer server({});
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.command("MAIL FROM:<>");
  client.command("RCPT TO:<x@b.test>");
  client.command("DATA");
  client.send("a\r\n..\r\n...x\r\n.y\r\nlast line without CRLF? no\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].sender, "");
  EXPECT_EQ(messages[0].data, "a\r\n.\r\n..x\r\ny\r\nlast line without CRLF? no\r\n");
}

TEST(FakeSmtpServer, AdvertisesWhatItIsTold) {
  FakeSmtpServer::Options options;
  options.hostname = "mx.b.test";
  options.size_limit = 1000;
  options.smtputf8 = false;
  options.extra_extensions = {"DSN"};
  FakeSmtpServer server(options);
  SmtpTestClient client(server.endpoint());
  auto ehlo = greet(client);
  EXPECT_EQ(ehlo.code, 250);
  EXPECT_EQ(ehlo.lines, (std::vector<std::string>{"mx.b.test greets you", "PIPELINING", "SIZE 1000",
                                                  "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"}));
}

TEST(FakeSmtpServer, WithoutExtensionsEhloIsOneLine) {
  FakeSmtpServer::Options options;
  options.pipelining = false;
  options.eightbitmime = false;
  options.smtputf8 = false;
  options.enhanced_status_codes = false;
  FakeSmtpServer server(options);
  SmtpTestClient client(server.endpoint());
  EXPECT_EQ(greet(client).lines.size(), 1u);
  // Its own replies then carry no enhanced status codes.
  EXPECT_EQ(client.command("MAIL FROM:<a@a.test>").first_line(), "sender ok");
}

TEST(FakeSmtpServer, EnforcesItsSizeLimit) {
  FakeSmtpServer::Options options;
  options.size_limit = 10;
  FakeSmtpServer server(options);
  SmtpTestClient client(server.endpoint());
  greet(client);
  EXPECT_EQ(client.command("MAIL FROM:<a@a.test> SIZE=11").code, 552);
  EXPECT_EQ(client.command("MAIL FROM:<a@a.test>").code, 250);
  client.command("RCPT TO:<b@b.test>");
  client.command("DATA");
  client.send("0123456789ab\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 552);
  EXPECT_TRUE(server.messages().empty());
  ASSERT_EQ(server.sessions().at(0).messages.size(), 1u);
  EXPECT_EQ(server.sessions().at(0).messages[0].reply_code, 552);
}

TEST(FakeSmtpServer, AnswersPipelinedCommandsInOrder) {
  FakeSmtpServer server(
      {.rules = {
           {.command = "RCPT", .argument = "<bad@b.test>", .reply = "550 5.1.1 no such user"}}});
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<bad@b.test>\r\nRCPT TO:<good@b.test>\r\nDATA\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  EXPECT_EQ(client.read_reply().code, 550);
  EXPECT_EQ(client.read_reply().code, 250);
  EXPECT_EQ(client.read_reply().code, 354);
  client.send("hi\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].recipients, std::vector<std::string>{"good@b.test"});
}

TEST(FakeSmtpServer, DataWithoutAcceptedRecipientsIsRefused) {
  FakeSmtpServer server({.rules = {{.command = "RCPT", .reply = "450 4.2.1 try later"}}});
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<x@b.test>\r\nDATA\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  EXPECT_EQ(client.read_reply().code, 450);
  EXPECT_EQ(client.read_reply().code, 554);
}

TEST(FakeSmtpServer, RulesApplyTheGivenNumberOfTimes) {
  FakeSmtpServer server({});
  server.add_rule({.command = "mail", .reply = "451 4.3.0 busy", .times = 2});
  for (int expected : {451, 451, 250}) {
    SmtpTestClient client(server.endpoint());
    greet(client);
    EXPECT_EQ(client.command("MAIL FROM:<a@a.test>").code, expected);
  }
  server.add_rule({.command = "MESSAGE", .argument = "reject me", .reply = "554 5.6.0 no"});
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.command("MAIL FROM:<a@a.test>");
  client.command("RCPT TO:<b@b.test>");
  client.command("DATA");
  client.send("please Reject Me\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 554);
  server.clear_rules();
  client.command("MAIL FROM:<a@a.test>");
  client.command("RCPT TO:<b@b.test>");
  client.command("DATA");
  client.send("please reject me\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
}

TEST(FakeSmtpServer, MultiLineScriptedReplies) {
  FakeSmtpServer server(
      {.rules = {{.command = "CONNECT", .reply = "220-first\n220-second\n220 third"}}});
  SmtpTestClient client(server.endpoint());
  auto greeting = client.read_reply();
  EXPECT_EQ(greeting.code, 220);
  EXPECT_EQ(greeting.lines, (std::vector<std::string>{"first", "second", "third"}));
}

TEST(FakeSmtpServer, AnswerAndCloseAndClose) {
  FakeSmtpServer server({.rules = {{.command = "CONNECT",
                                    .reply = "421 4.3.2 shutting down",
                                    .then = Then::answer_and_close,
                                    .times = 1},
                                   {.command = "RCPT", .then = Then::close}}});
  {
    SmtpTestClient client(server.endpoint());
    EXPECT_EQ(client.read_reply().code, 421);
    EXPECT_TRUE(client.closed_by_server());
  }
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.command("MAIL FROM:<a@a.test>");
  client.send("RCPT TO:<b@b.test>\r\n");
  EXPECT_TRUE(client.closed_by_server());
}

TEST(FakeSmtpServer, MessageDroppedAfterTheDataIsRecordedWithoutAReply) {
  FakeSmtpServer server({.rules = {{.command = "MESSAGE", .then = Then::close}}});
  SmtpTestClient client(server.endpoint());
  greet(client);
  client.command("MAIL FROM:<a@a.test>");
  client.command("RCPT TO:<b@b.test>");
  client.command("DATA");
  client.send("body\r\n.\r\n");
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_TRUE(server.messages().empty());
  ASSERT_EQ(server.sessions().at(0).messages.size(), 1u);
  EXPECT_EQ(server.sessions().at(0).messages[0].reply_code, 0);
  EXPECT_EQ(server.sessions().at(0).messages[0].data, "body\r\n");
}

TEST(FakeSmtpServer, HangingServerStopsCleanly) {
  auto server = std::make_unique<FakeSmtpServer>(
      FakeSmtpServer::Options{.rules = {{.command = "EHLO", .then = Then::hang}}});
  SmtpTestClient client(server->endpoint());
  EXPECT_EQ(client.read_reply().code, 220);
  client.send("EHLO client.test\r\n");
  EXPECT_FALSE(server->wait_for_messages(1, std::chrono::milliseconds(1)));
  server.reset();  // with the client still connected
  EXPECT_TRUE(client.closed_by_server());
}

TEST(FakeSmtpServer, StarttlsRecordsVersionAndSni) {
  TempDir dir;
  TestCa ca(dir.path());
  auto leaf = ca.issue("mx", {.dns_names = {"mx.b.test"}});
  FakeSmtpServer server({.starttls = true, .cert_file = leaf.cert_file, .key_file = leaf.key_file});
  SmtpTestClient client(server.endpoint());
  EXPECT_TRUE(greet(client).has_line("STARTTLS"));
  // Pipelined after STARTTLS: must be thrown away (RFC 3207 §4.2).
  client.send("STARTTLS\r\nNOOP\r\n");
  EXPECT_EQ(client.read_reply().code, 220);
  client.start_tls(ca.ca_file(), "mx.b.test");
  auto ehlo = client.command("EHLO client.test");
  EXPECT_FALSE(ehlo.has_line("STARTTLS"));
  EXPECT_EQ(client.command("STARTTLS").code, 503);
  client.command("MAIL FROM:<a@a.test>");
  client.command("RCPT TO:<b@b.test>");
  client.command("DATA");
  client.send("secret\r\n.\r\n");
  EXPECT_EQ(client.read_reply().code, 250);
  EXPECT_TRUE(server.wait_for_messages(1, std::chrono::seconds(5)));
  auto session = server.sessions().at(0);
  EXPECT_TRUE(session.tls);
  EXPECT_EQ(session.tls_version, "TLSv1.3");
  EXPECT_EQ(session.server_name, "mx.b.test");
  EXPECT_EQ(session.commands.at(2), "EHLO client.test");  // no NOOP in between
}

TEST(FakeSmtpServer, SeveralHostsShareOnePort) {
  std::vector<FakeSmtpServer::Options> options(3);
  options[0].address = "127.0.0.5";
  options[1].address = "127.0.0.6";
  options[2].address = "127.0.0.7";
  auto servers = make_fake_smtp_servers(options);
  ASSERT_EQ(servers.size(), 3u);
  for (const auto& server : servers) {
    EXPECT_EQ(server->port(), servers[0]->port());
    SmtpTestClient client(server->endpoint());
    greet(client);
  }
  EXPECT_EQ(servers[1]->address(), "127.0.0.6");
  EXPECT_EQ(servers[1]->connections(), 1u);
}

}  // namespace
}  // namespace stsrelay::testing
