#include "smtp/client.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_future.hpp>
#include <gtest/gtest.h>

#include "tests/support/fake_smtp_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"

// The delivery client against a fake MX host on loopback, with real STARTTLS
// and certificates from a test CA: what the client reports, and what the
// server received (or, for TLS failures, did not).
namespace stsrelay::smtp {
namespace {

using namespace std::chrono_literals;
using stsrelay::testing::FakeSmtpRule;
using stsrelay::testing::FakeSmtpServer;
using stsrelay::testing::FakeSmtpSession;
using stsrelay::testing::FakeTlsVersion;
using stsrelay::testing::TempDir;
using stsrelay::testing::TestCa;
using Then = FakeSmtpRule::Then;

constexpr const char* mx_name = "mx.b.test";

using Opened = tl::expected<std::unique_ptr<SmtpConnection>, DeliveryStatus>;

bool sent_command(const FakeSmtpSession& session, std::string_view verb) {
  return std::any_of(session.commands.begin(), session.commands.end(),
                     [verb](const std::string& command) { return command.starts_with(verb); });
}

Envelope envelope_for(std::vector<std::string> recipients, std::uint64_t size = 0) {
  Envelope envelope;
  envelope.sender = "sender@a.test";
  envelope.recipients = std::move(recipients);
  envelope.size = size;
  return envelope;
}

asio::awaitable<std::vector<DeliveryStatus>> send_on(SmtpConnection* connection, Envelope envelope,
                                                     std::string content) {
  auto statuses = co_await connection->send(envelope, content);
  co_return statuses;
}

asio::awaitable<void> quit_on(SmtpConnection* connection) {
  co_await connection->quit();
}

class SmtpClient : public ::testing::Test {
 protected:
  SmtpClient() : ca_(dir_.path()) {
    auto context = tls::make_client_context(ca_.ca_file().string());
    EXPECT_TRUE(context.has_value());
    context_ = *context;
  }

  ClientOptions options(std::chrono::milliseconds command_timeout = 10s) const {
    ClientOptions options;
    options.helo_name = "relay.a.test";
    options.connect_timeout = 10s;
    options.command_timeout = command_timeout;
    options.tls_context = context_;
    return options;
  }

  // A fake MX with STARTTLS and a certificate from `ca` for `names`.
  FakeSmtpServer::Options tls_server(TestCa& ca, std::vector<std::string> names,
                                     std::chrono::seconds not_after = 24h) {
    auto leaf =
        ca.issue("leaf" + std::to_string(++leaves_), {.dns_names = std::move(names),
                                                      .not_before_offset = std::chrono::hours(-72),
                                                      .not_after_offset = not_after});
    FakeSmtpServer::Options server;
    server.hostname = mx_name;
    server.starttls = true;
    server.cert_file = leaf.cert_file;
    server.key_file = leaf.key_file;
    return server;
  }
  FakeSmtpServer::Options tls_server() { return tls_server(ca_, {mx_name}); }

  template <typename T>
  T run(asio::awaitable<T> work) {
    auto future = asio::co_spawn(io_, std::move(work), asio::use_future);
    io_.restart();
    io_.run();
    return future.get();
  }

  Opened open(const FakeSmtpServer& server, TlsRequirement requirement,
              ClientOptions client_options) {
    return run(SmtpConnection::open(mx_name, asio::ip::make_address(server.address()),
                                    server.port(), requirement, std::move(client_options)));
  }
  Opened open(const FakeSmtpServer& server,
              TlsRequirement requirement = TlsRequirement::opportunistic) {
    return open(server, requirement, options());
  }

  std::vector<DeliveryStatus> send(SmtpConnection& connection, Envelope envelope,
                                   std::string content) {
    return run(send_on(&connection, std::move(envelope), std::move(content)));
  }

  void quit(SmtpConnection& connection) {
    auto future = asio::co_spawn(io_, quit_on(&connection), asio::use_future);
    io_.restart();
    io_.run();
    future.get();
  }

  // Opens, sends one message and quits.
  std::vector<DeliveryStatus> deliver(const FakeSmtpServer& server, Envelope envelope,
                                      std::string content = "Subject: test\r\n\r\nbody\r\n") {
    auto connection = open(server);
    if (!connection) {
      ADD_FAILURE() << "open failed: " << connection.error().diagnostic();
      return {};
    }
    auto statuses = send(**connection, std::move(envelope), std::move(content));
    quit(**connection);
    return statuses;
  }

  TempDir dir_;
  TestCa ca_;
  std::shared_ptr<asio::ssl::context> context_;
  asio::io_context io_;
  int leaves_ = 0;
};

// ---- plain delivery ------------------------------------------------------

TEST_F(SmtpClient, DeliversInPlaintextByteExact) {
  FakeSmtpServer server({.hostname = mx_name});
  const std::string content =
      "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nbare\nlf\r\nno final line end";
  Envelope envelope = envelope_for({"one@b.test", "two@b.test"});
  envelope.eight_bit_mime = true;
  auto connection = open(server);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  EXPECT_FALSE((*connection)->tls().used);
  EXPECT_TRUE((*connection)->capabilities().pipelining);
  EXPECT_EQ((*connection)->host(), mx_name);
  auto statuses = send(**connection, envelope, content);
  EXPECT_TRUE((*connection)->usable());
  quit(**connection);
  EXPECT_FALSE((*connection)->usable());

  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::delivered) << status.diagnostic();
    EXPECT_EQ(status.code, 250);
    EXPECT_EQ(status.stage, Stage::message);
    EXPECT_EQ(status.remote_mta, mx_name);
  }
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].sender, "sender@a.test");
  EXPECT_EQ(messages[0].recipients, (std::vector<std::string>{"one@b.test", "two@b.test"}));
  EXPECT_EQ(messages[0].mail_parameters, (std::vector<std::string>{"BODY=8BITMIME"}));
  // Bare LF and the missing last line end become CRLF; the dots come back.
  EXPECT_EQ(
      messages[0].data,
      "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nbare\r\nlf\r\nno final line end\r\n");
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].ehlo_name, "relay.a.test");
  EXPECT_TRUE(sessions[0].quit);
}

TEST_F(SmtpClient, LargeMessageGoesOutInPieces) {
  FakeSmtpServer server({});
  std::string content;
  for (int line = 0; content.size() < 300 * 1024; ++line) {
    content += (line % 7 == 0 ? "." : "") + std::string("line ") + std::to_string(line) + "\r\n";
  }
  auto statuses = deliver(server, envelope_for({"one@b.test"}), content);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered) << statuses[0].diagnostic();
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].data, content);
}

TEST_F(SmtpClient, NullSenderAndDeclaredSize) {
  FakeSmtpServer server({.size_limit = 100000});
  Envelope envelope = envelope_for({"one@b.test"}, 18);
  envelope.sender = "";
  auto statuses = deliver(server, envelope, "Subject: x\r\n\r\nbody");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].sender, "");
  EXPECT_EQ(messages[0].mail_parameters, (std::vector<std::string>{"SIZE=18"}));
}

TEST_F(SmtpClient, EightBitWithout8BitMimeIsSentWithoutBody) {
  FakeSmtpServer server({.eightbitmime = false});
  Envelope envelope = envelope_for({"one@b.test"});
  envelope.eight_bit_mime = true;
  auto statuses = deliver(server, envelope, "Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_TRUE(messages[0].mail_parameters.empty());
}

TEST_F(SmtpClient, Smtputf8IsDeclaredWhenNeeded) {
  FakeSmtpServer server({});
  Envelope envelope = envelope_for({"j\xc3\xb6rg@b.test"});
  envelope.smtputf8 = true;
  auto statuses = deliver(server, envelope);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].mail_parameters, (std::vector<std::string>{"SMTPUTF8"}));
}

// ---- STARTTLS --------------------------------------------------------------

TEST_F(SmtpClient, ValidatedTlsWithAValidCertificate) {
  FakeSmtpServer server(tls_server());
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  const TlsOutcome& tls = (*connection)->tls();
  EXPECT_TRUE(tls.used);
  EXPECT_EQ(tls.version, "TLSv1.3");
  EXPECT_FALSE(tls.cipher.empty());
  EXPECT_EQ(tls.certificate.verdict, tls::CertificateVerdict::valid);
  EXPECT_TRUE(tls.failure.empty());
  // What EHLO said before TLS is forgotten; after it STARTTLS is not offered.
  EXPECT_FALSE((*connection)->capabilities().starttls);
  auto statuses = send(**connection, envelope_for({"one@b.test"}), "Subject: tls\r\n\r\nhi\r\n");
  quit(**connection);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered) << statuses[0].diagnostic();

  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].tls);
  EXPECT_EQ(sessions[0].tls_version, "TLSv1.3");
  EXPECT_EQ(sessions[0].server_name, mx_name);
  ASSERT_GE(sessions[0].commands.size(), 4u);
  EXPECT_EQ(sessions[0].commands[0], "EHLO relay.a.test");
  EXPECT_EQ(sessions[0].commands[1], "STARTTLS");
  EXPECT_EQ(sessions[0].commands[2], "EHLO relay.a.test");
  EXPECT_EQ(sessions[0].messages.size(), 1u);
}

TEST_F(SmtpClient, ValidatedTls12IsEnough) {
  auto server_options = tls_server();
  server_options.tls_max = FakeTlsVersion::tls1_2;
  FakeSmtpServer server(server_options);
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  EXPECT_EQ((*connection)->tls().version, "TLSv1.2");
}

struct BadCertificateCase {
  std::string name;
  std::string tls_result;
};
void PrintTo(const BadCertificateCase& c, std::ostream* out) {
  *out << c.name;
}

class SmtpClientBadCertificate : public SmtpClient,
                                 public ::testing::WithParamInterface<BadCertificateCase> {
 protected:
  FakeSmtpServer::Options server_for_case() {
    const std::string& name = GetParam().name;
    if (name == "expired") {
      return tls_server(ca_, {mx_name}, -std::chrono::hours(1));
    }
    if (name == "wrong_name") {
      return tls_server(ca_, {"mx.other.test"});
    }
    other_ca_ = std::make_unique<TestCa>(dir_.path() / "other", "someone else's CA");
    return tls_server(*other_ca_, {mx_name});
  }
  std::unique_ptr<TestCa> other_ca_;
};

TEST_P(SmtpClientBadCertificate, ValidatedFailsTheHostBeforeMail) {
  std::filesystem::create_directories(dir_.path() / "other");
  FakeSmtpServer server(server_for_case());
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_FALSE(connection);
  const DeliveryStatus& status = connection.error();
  EXPECT_EQ(status.disposition, Disposition::try_next_mx);
  EXPECT_EQ(status.stage, Stage::starttls);
  EXPECT_EQ(status.tls_result, GetParam().tls_result);
  EXPECT_EQ(status.enhanced, "4.7.5");
  EXPECT_EQ(status.remote_mta, mx_name);
  EXPECT_FALSE(status.text.empty());
  // (Whether the fake recorded its side of the handshake races with the
  // client hanging up right after it: not asserted.)
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sent_command(sessions[0], "STARTTLS"));
  EXPECT_FALSE(sent_command(sessions[0], "MAIL"));
  EXPECT_TRUE(server.messages().empty());
}

TEST_P(SmtpClientBadCertificate, OpportunisticDeliversOverTlsAndRecordsTheVerdict) {
  std::filesystem::create_directories(dir_.path() / "other");
  FakeSmtpServer server(server_for_case());
  auto connection = open(server, TlsRequirement::opportunistic);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  const TlsOutcome& tls = (*connection)->tls();
  EXPECT_TRUE(tls.used);
  EXPECT_EQ(tls::rfc8460_result_type(tls.certificate.verdict), GetParam().tls_result);
  auto statuses = send(**connection, envelope_for({"one@b.test"}), "hi\r\n");
  quit(**connection);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].tls);
  EXPECT_EQ(sessions[0].messages.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SmtpClientBadCertificate,
    ::testing::Values(BadCertificateCase{"expired", "certificate-expired"},
                      BadCertificateCase{"wrong_name", "certificate-host-mismatch"},
                      BadCertificateCase{"untrusted", "certificate-not-trusted"}),
    [](const auto& info) { return info.param.name; });

TEST_F(SmtpClient, ValidatedWithoutStarttlsNeverSendsMail) {
  FakeSmtpServer server({.hostname = mx_name});
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().tls_result, "starttls-not-supported");
  EXPECT_EQ(connection.error().enhanced, "4.7.4");
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_FALSE(sent_command(sessions[0], "MAIL"));
  EXPECT_FALSE(sent_command(sessions[0], "STARTTLS"));
  EXPECT_TRUE(sessions[0].quit);
}

TEST_F(SmtpClient, ValidatedWithStarttlsRefused) {
  auto server_options = tls_server();
  server_options.rules = {{.command = "STARTTLS", .reply = "454 4.7.0 TLS not available"}};
  FakeSmtpServer server(server_options);
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().tls_result, "starttls-not-supported");
  EXPECT_EQ(connection.error().diagnostic(), "454 4.7.0 TLS not available");
  EXPECT_FALSE(sent_command(server.sessions().at(0), "MAIL"));
}

TEST_F(SmtpClient, OpportunisticGoesOnInPlaintextWhenStarttlsIsRefused) {
  auto server_options = tls_server();
  server_options.rules = {{.command = "STARTTLS", .reply = "454 4.7.0 TLS not available"}};
  FakeSmtpServer server(server_options);
  auto connection = open(server, TlsRequirement::opportunistic);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  EXPECT_FALSE((*connection)->tls().used);
  EXPECT_EQ((*connection)->tls().failure, "STARTTLS refused: 454 4.7.0 TLS not available");
  auto statuses = send(**connection, envelope_for({"one@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  EXPECT_EQ(server.connections(), 1u);
}

TEST_F(SmtpClient, ValidatedRefusesTls11) {
  auto server_options = tls_server();
  server_options.tls_min = FakeTlsVersion::tls1_1;
  server_options.tls_max = FakeTlsVersion::tls1_1;
  FakeSmtpServer server(server_options);
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().stage, Stage::starttls);
  EXPECT_EQ(connection.error().tls_result, "validation-failure");
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_FALSE(sent_command(server.sessions().at(0), "MAIL"));
}

TEST_F(SmtpClient, OpportunisticHandshakeFailureRetriesInPlaintext) {
  auto server_options = tls_server();
  server_options.tls_min = FakeTlsVersion::tls1_1;
  server_options.tls_max = FakeTlsVersion::tls1_1;
  FakeSmtpServer server(server_options);
  auto connection = open(server, TlsRequirement::opportunistic);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  EXPECT_FALSE((*connection)->tls().used);
  EXPECT_NE((*connection)->tls().failure.find("TLS handshake with mx.b.test failed"),
            std::string::npos)
      << (*connection)->tls().failure;
  auto statuses = send(**connection, envelope_for({"one@b.test"}), "hi\r\n");
  quit(**connection);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);

  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 2u);
  EXPECT_TRUE(sent_command(sessions[0], "STARTTLS"));
  EXPECT_FALSE(sent_command(sessions[0], "MAIL"));
  EXPECT_FALSE(sessions[1].tls);
  EXPECT_FALSE(sent_command(sessions[1], "STARTTLS"));
  EXPECT_EQ(sessions[1].messages.size(), 1u);
}

// ---- EHLO, pipelining --------------------------------------------------------

TEST_F(SmtpClient, FallsBackToHeloWhenEhloIsRefused) {
  FakeSmtpServer server(
      {.rules = {{.command = "EHLO", .reply = "502 5.5.2 EHLO not implemented"}}});
  auto connection = open(server);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  EXPECT_FALSE((*connection)->capabilities().pipelining);
  Envelope envelope = envelope_for({"one@b.test"});
  envelope.eight_bit_mime = true;
  auto statuses = send(**connection, envelope, "hi\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::delivered);
  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].commands.at(0), "EHLO relay.a.test");
  EXPECT_EQ(sessions[0].commands.at(1), "HELO relay.a.test");
  ASSERT_EQ(sessions[0].messages.size(), 1u);
  // No extensions after HELO: no BODY=8BITMIME.
  EXPECT_TRUE(sessions[0].messages[0].mail_parameters.empty());
}

TEST_F(SmtpClient, EhloTemporaryFailureTriesTheNextHost) {
  FakeSmtpServer server({.rules = {{.command = "EHLO",
                                    .reply = "421 4.3.2 shutting down",
                                    .then = Then::answer_and_close}}});
  auto connection = open(server);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().stage, Stage::ehlo);
  EXPECT_EQ(connection.error().code, 421);
}

class SmtpClientPipelining : public SmtpClient, public ::testing::WithParamInterface<bool> {};

TEST_P(SmtpClientPipelining, DeliversWithPerRecipientResults) {
  FakeSmtpServer server(
      {.pipelining = GetParam(),
       .rules = {
           {.command = "RCPT", .argument = "<bad@b.test>", .reply = "550 5.1.1 no such user"},
           {.command = "RCPT", .argument = "<later@b.test>", .reply = "450 4.2.0 mailbox busy"}}});
  auto statuses = deliver(server, envelope_for({"bad@b.test", "good@b.test", "later@b.test"}));
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_EQ(statuses[0].disposition, Disposition::bounce);
  EXPECT_EQ(statuses[0].stage, Stage::rcpt);
  EXPECT_EQ(statuses[0].enhanced, "5.1.1");
  EXPECT_EQ(statuses[0].diagnostic(), "550 5.1.1 no such user");
  EXPECT_EQ(statuses[1].disposition, Disposition::delivered);
  EXPECT_EQ(statuses[1].stage, Stage::message);
  EXPECT_EQ(statuses[2].disposition, Disposition::defer);
  EXPECT_EQ(statuses[2].enhanced, "4.2.0");
  auto messages = server.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].recipients, (std::vector<std::string>{"good@b.test"}));

  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  const auto& commands = sessions[0].commands;
  auto mail = std::find_if(commands.begin(), commands.end(),
                           [](const std::string& command) { return command.starts_with("MAIL"); });
  ASSERT_NE(mail, commands.end());
  std::vector<std::string> transaction(mail, mail + 5);
  EXPECT_EQ(transaction,
            (std::vector<std::string>{"MAIL FROM:<sender@a.test>", "RCPT TO:<bad@b.test>",
                                      "RCPT TO:<good@b.test>", "RCPT TO:<later@b.test>", "DATA"}));
  // Pipelined: RCPT and DATA came with MAIL, in one write; otherwise each
  // waited for the reply to the one before.
  const auto first = static_cast<std::size_t>(mail - commands.begin());
  const auto& batched = sessions[0].arrived_with_previous;
  ASSERT_EQ(batched.size(), commands.size());
  EXPECT_FALSE(batched[first]);
  for (std::size_t i = first + 1; i < first + 5; ++i) {
    EXPECT_EQ(batched[i], GetParam()) << commands[i];
  }
}

TEST_P(SmtpClientPipelining, NoDataWhenEveryRecipientIsRejected) {
  FakeSmtpServer server({.pipelining = GetParam(),
                         .rules = {{.command = "RCPT", .reply = "550 5.1.1 no such user"}}});
  auto connection = open(server);
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test", "b@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::bounce);
    EXPECT_EQ(status.enhanced, "5.1.1");
  }
  EXPECT_TRUE((*connection)->usable());
  // The session is ready for another transaction.
  server.clear_rules();
  auto again = send(**connection, envelope_for({"c@b.test"}), "again\r\n");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].disposition, Disposition::delivered) << again[0].diagnostic();
  quit(**connection);

  auto sessions = server.sessions();
  ASSERT_EQ(sessions.size(), 1u);
  ASSERT_EQ(sessions[0].messages.size(), 1u);
  EXPECT_EQ(sessions[0].messages[0].data, "again\r\n");
  if (!GetParam()) {
    // One at a time: DATA is not even asked for, and the transaction reset.
    auto first_data = std::find(sessions[0].commands.begin(), sessions[0].commands.end(), "DATA");
    auto rset = std::find(sessions[0].commands.begin(), sessions[0].commands.end(), "RSET");
    EXPECT_LT(rset, first_data);
  }
}

INSTANTIATE_TEST_SUITE_P(OnAndOff, SmtpClientPipelining, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "pipelined" : "one_by_one"; });

TEST_F(SmtpClient, PipelinedDataAcceptedWithoutRecipientsGetsAnEmptyEnd) {
  // A server that says 354 although it refused every recipient (RFC 2920
  // §3.1): the client ends the empty data at once.
  FakeSmtpServer server({.rules = {{.command = "RCPT", .reply = "550 5.1.1 no such user"},
                                   {.command = "DATA", .reply = "354 go ahead"},
                                   {.command = "MESSAGE", .reply = "554 5.5.1 no recipients"}}});
  auto connection = open(server);
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test"}), "secret content\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::bounce);
  EXPECT_EQ(statuses[0].stage, Stage::rcpt);
  EXPECT_TRUE((*connection)->usable());
  auto sessions = server.sessions();
  ASSERT_EQ(sessions[0].messages.size(), 1u);
  EXPECT_EQ(sessions[0].messages[0].data, "");
}

// ---- failures of the transaction -----------------------------------------------

TEST_F(SmtpClient, MailTemporaryFailureDefersEveryRecipient) {
  FakeSmtpServer server({.rules = {{.command = "MAIL", .reply = "451 4.3.0 try later"}}});
  auto statuses = deliver(server, envelope_for({"a@b.test", "b@b.test"}));
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::defer);
    EXPECT_EQ(status.stage, Stage::mail);
    EXPECT_EQ(status.diagnostic(), "451 4.3.0 try later");
  }
  EXPECT_TRUE(server.messages().empty());
}

TEST_F(SmtpClient, MailPermanentFailureBouncesEveryRecipient) {
  FakeSmtpServer server(
      {.pipelining = false, .rules = {{.command = "MAIL", .reply = "553 5.1.8 bad sender"}}});
  auto statuses = deliver(server, envelope_for({"a@b.test", "b@b.test"}));
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::bounce);
    EXPECT_EQ(status.enhanced, "5.1.8");
  }
  EXPECT_FALSE(sent_command(server.sessions().at(0), "RCPT"));
}

TEST_F(SmtpClient, DataRefusedDefersTheAcceptedRecipients) {
  FakeSmtpServer server({.rules = {{.command = "DATA", .reply = "451 4.3.1 no space"}}});
  auto statuses = deliver(server, envelope_for({"a@b.test"}));
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::defer);
  EXPECT_EQ(statuses[0].stage, Stage::data);
  EXPECT_TRUE(sent_command(server.sessions().at(0), "RSET"));
}

TEST_F(SmtpClient, FinalDotRejectedBounces) {
  FakeSmtpServer server({.rules = {{.command = "MESSAGE", .reply = "554 5.7.1 spam"}}});
  auto connection = open(server);
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test", "b@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::bounce);
    EXPECT_EQ(status.stage, Stage::message);
    EXPECT_EQ(status.diagnostic(), "554 5.7.1 spam");
  }
  EXPECT_TRUE((*connection)->usable());
}

TEST_F(SmtpClient, FinalDotTemporaryFailureDefers) {
  FakeSmtpServer server({.rules = {{.command = "MESSAGE", .reply = "452 4.3.1 disk full"}}});
  auto statuses = deliver(server, envelope_for({"a@b.test"}));
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::defer);
  EXPECT_EQ(statuses[0].enhanced, "4.3.1");
}

TEST_F(SmtpClient, Greeting421TriesTheNextHost) {
  FakeSmtpServer server(
      {.rules = {
           {.command = "CONNECT", .reply = "421 4.3.2 too busy", .then = Then::answer_and_close}}});
  auto connection = open(server);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().stage, Stage::greeting);
  EXPECT_EQ(connection.error().diagnostic(), "421 4.3.2 too busy");
}

TEST_F(SmtpClient, Greeting554TriesTheNextHostAndSaysQuit) {
  FakeSmtpServer server({.rules = {{.command = "CONNECT", .reply = "554 no service here"}}});
  auto connection = open(server);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().code, 554);
  EXPECT_TRUE(server.sessions().at(0).quit);
}

TEST_F(SmtpClient, ConnectionRefusedTriesTheNextHost) {
  std::uint16_t port = 0;
  {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = acceptor.local_endpoint().port();
  }
  auto connection = run(SmtpConnection::open(mx_name, asio::ip::make_address("127.0.0.1"), port,
                                             TlsRequirement::opportunistic, options()));
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().stage, Stage::connect);
  EXPECT_EQ(connection.error().enhanced, "4.4.1");
  EXPECT_EQ(connection.error().code, 0);
  EXPECT_NE(connection.error().text.find("cannot connect to mx.b.test [127.0.0.1]"),
            std::string::npos);
}

TEST_F(SmtpClient, SizeOverTheLimitBouncesWithoutMail) {
  FakeSmtpServer server({.size_limit = 1000});
  auto statuses = deliver(server, envelope_for({"a@b.test", "b@b.test"}, 5000));
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::bounce);
    EXPECT_EQ(status.enhanced, "5.3.4");
    EXPECT_EQ(status.code, 0);
  }
  EXPECT_FALSE(sent_command(server.sessions().at(0), "MAIL"));
}

TEST_F(SmtpClient, Smtputf8NotOfferedBouncesWithoutMail) {
  FakeSmtpServer server({.smtputf8 = false});
  Envelope envelope = envelope_for({"j\xc3\xb6rg@b.test"});
  envelope.smtputf8 = true;
  auto statuses = deliver(server, envelope);
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::bounce);
  EXPECT_EQ(statuses[0].enhanced, "5.6.7");
  EXPECT_FALSE(sent_command(server.sessions().at(0), "MAIL"));
}

TEST_F(SmtpClient, ServerSilentAfterTheFinalDotDefersAndSaysSo) {
  FakeSmtpServer server({.rules = {{.command = "MESSAGE", .then = Then::hang}}});
  auto connection = open(server, TlsRequirement::opportunistic, options(300ms));
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::defer);
  EXPECT_EQ(statuses[0].stage, Stage::message);
  EXPECT_EQ(statuses[0].enhanced, "4.4.2");
  EXPECT_NE(statuses[0].text.find("timed out after 300 ms"), std::string::npos) << statuses[0].text;
  EXPECT_NE(statuses[0].text.find("may have been delivered"), std::string::npos)
      << statuses[0].text;
  EXPECT_FALSE((*connection)->usable());
  // Another transaction is refused at once, without touching the network.
  auto again = send(**connection, envelope_for({"b@b.test"}), "hi\r\n");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].disposition, Disposition::defer);
  quit(**connection);
}

TEST_F(SmtpClient, ServerSilentAfterDataDefers) {
  FakeSmtpServer server({.pipelining = false, .rules = {{.command = "DATA", .then = Then::hang}}});
  auto connection = open(server, TlsRequirement::opportunistic, options(300ms));
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 1u);
  EXPECT_EQ(statuses[0].disposition, Disposition::defer);
  EXPECT_EQ(statuses[0].stage, Stage::data);
  EXPECT_EQ(statuses[0].text.find("may have been delivered"), std::string::npos);
  EXPECT_FALSE((*connection)->usable());
}

TEST_F(SmtpClient, SilentGreetingTriesTheNextHost) {
  FakeSmtpServer server({.rules = {{.command = "CONNECT", .then = Then::hang}}});
  auto connection = open(server, TlsRequirement::opportunistic, options(300ms));
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().disposition, Disposition::try_next_mx);
  EXPECT_EQ(connection.error().stage, Stage::greeting);
}

TEST_F(SmtpClient, ConnectionLostAfterRcptDefers) {
  FakeSmtpServer server(
      {.pipelining = false,
       .rules = {{.command = "RCPT", .argument = "<b@b.test>", .then = Then::close}}});
  auto statuses = deliver(server, envelope_for({"a@b.test", "b@b.test"}));
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::defer);
    EXPECT_EQ(status.stage, Stage::rcpt);
    EXPECT_EQ(status.code, 0);
  }
}

TEST_F(SmtpClient, Rcpt421DefersTheRestAndEndsTheConnection) {
  FakeSmtpServer server({.pipelining = false,
                         .rules = {{.command = "RCPT",
                                    .argument = "<b@b.test>",
                                    .reply = "421 4.3.2 going down",
                                    .then = Then::answer_and_close}}});
  auto connection = open(server);
  ASSERT_TRUE(connection);
  auto statuses = send(**connection, envelope_for({"a@b.test", "b@b.test", "c@b.test"}), "hi\r\n");
  ASSERT_EQ(statuses.size(), 3u);
  for (const auto& status : statuses) {
    EXPECT_EQ(status.disposition, Disposition::defer);
    EXPECT_EQ(status.code, 421);
  }
  EXPECT_FALSE((*connection)->usable());
}

// ---- connection reuse -----------------------------------------------------

TEST_F(SmtpClient, TwoMessagesOnOneConnection) {
  FakeSmtpServer server(tls_server());
  auto connection = open(server, TlsRequirement::validated);
  ASSERT_TRUE(connection) << connection.error().diagnostic();
  auto first = send(**connection, envelope_for({"a@b.test"}), "first\r\n");
  ASSERT_TRUE((*connection)->usable());
  auto second = send(**connection, envelope_for({"b@b.test", "c@b.test"}), "second\r\n");
  quit(**connection);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].disposition, Disposition::delivered);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[1].disposition, Disposition::delivered);

  EXPECT_EQ(server.connections(), 1u);
  auto sessions = server.sessions();
  ASSERT_EQ(sessions[0].messages.size(), 2u);
  EXPECT_EQ(sessions[0].messages[0].data, "first\r\n");
  EXPECT_EQ(sessions[0].messages[1].recipients, (std::vector<std::string>{"b@b.test", "c@b.test"}));
  EXPECT_FALSE(sent_command(sessions[0], "RSET"));
  EXPECT_TRUE(sessions[0].quit);
}

}  // namespace
}  // namespace stsrelay::smtp
