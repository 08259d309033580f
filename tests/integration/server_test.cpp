// The accepting server over real loopback sockets: an SMTP client on one
// side, the real queue (SQLite in a temporary directory) on the other.

#include "smtp/server.hpp"

#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <gtest/gtest.h>

#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"
#include "queue/store.hpp"
#include "relay/queue_sink.hpp"
#include "tests/support/smtp_test_client.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/server_context.hpp"

namespace stsrelay {
namespace {

using testing::SmtpTestClient;

struct ServerSetup {
  bool allow_clients = true;
  bool with_tls = false;
  std::size_t max_connections = 100;
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(1);
};

// Runs a Server on its own io_context thread, bound to 127.0.0.1 on a free port.
class RunningServer {
 public:
  RunningServer(const std::filesystem::path& directory, ServerSetup setup)
      : ca_(directory / "ca"), writer_(open_store(directory / "spool")) {
    smtp::ServerOptions options;
    options.endpoints.emplace_back(asio::ip::make_address("127.0.0.1"), 0);
    options.session.hostname = "relay.test";
    options.session.max_message_size = 100000;
    options.session.max_recipients = 10;
    options.session.new_message_id = [this] { return ids_.next(); };
    options.max_connections = setup.max_connections;
    options.idle_timeout = setup.idle_timeout;
    options.client_allowed = [allow = setup.allow_clients](const asio::ip::address&) {
      return allow;
    };
    if (setup.with_tls) {
      auto leaf = ca_.issue("relay", {.dns_names = {"relay.test"}});
      auto context = tls::make_server_context(leaf.cert_file, leaf.key_file);
      EXPECT_TRUE(context.has_value()) << context.error();
      options.tls = std::make_shared<asio::ssl::context>(std::move(*context));
    }
    server_.emplace(io_.get_executor(), std::move(options), sink_, observer_);
    auto listening = server_->listen();
    EXPECT_TRUE(listening.has_value()) << listening.error();
    server_->start();
    thread_ = std::thread([this] { io_.run(); });
  }

  ~RunningServer() {
    stop();
    writer_.stop();
  }

  asio::ip::tcp::endpoint endpoint() const { return server_->local_endpoints().front(); }
  const std::filesystem::path& ca_file() const { return ca_.ca_file(); }

  // Stops the server as SIGTERM does and waits until every session has ended.
  void stop() {
    if (!thread_.joinable()) {
      return;
    }
    asio::post(io_, [this] {
      server_->stop();
      asio::co_spawn(io_, server_->drained(), asio::detached);
    });
    thread_.join();
  }

 private:
  static queue::Store open_store(const std::filesystem::path& directory) {
    auto store = queue::Store::open(directory);
    if (!store) {
      throw std::runtime_error(store.error());
    }
    return std::move(*store);
  }

  testing::TestCa ca_;
  queue::QueueIdGenerator ids_;
  queue::GroupCommitWriter writer_;
  relay::QueueSink sink_{writer_};
  smtp::ServerObserver observer_;
  asio::io_context io_;
  std::optional<smtp::Server> server_;
  std::thread thread_;
};

std::string queued_id(const SmtpTestClient::Reply& reply) {
  const std::string prefix = "2.0.0 Ok: queued as ";
  EXPECT_EQ(reply.code, 250);
  EXPECT_EQ(reply.first_line().rfind(prefix, 0), 0u) << reply.first_line();
  return reply.first_line().substr(prefix.size());
}

std::string stored_content(const std::filesystem::path& directory, const std::string& id) {
  auto store = queue::Store::open(directory / "spool");
  EXPECT_TRUE(store.has_value());
  auto content = store->content(id);
  EXPECT_TRUE(content.has_value());
  return content->value_or("<missing>");
}

class ServerTest : public ::testing::Test {
 protected:
  testing::TempDir temp_;
};

TEST_F(ServerTest, QueuesTheMessageByteExactAfterUnstuffingBelowAReceivedHeader) {
  RunningServer server(temp_.path(), {});
  SmtpTestClient client(server.endpoint());
  EXPECT_EQ(client.read_reply().code, 220);
  auto ehlo = client.command("EHLO client.test");
  EXPECT_EQ(ehlo.code, 250);
  EXPECT_TRUE(ehlo.has_line("PIPELINING"));
  EXPECT_FALSE(ehlo.has_line("STARTTLS"));
  EXPECT_EQ(client.command("MAIL FROM:<alice@client.test> BODY=8BITMIME").code, 250);
  EXPECT_EQ(client.command("RCPT TO:<bob@example.org>").code, 250);
  EXPECT_EQ(client.command("DATA").code, 354);
  client.send("Subject: dots\r\n\r\n..leading dot\r\nplain \xC3\xA9t\xC3\xA9\r\n.\r\n");
  std::string id = queued_id(client.read_reply());
  EXPECT_EQ(client.command("QUIT").code, 221);

  std::string content = stored_content(temp_.path(), id);
  const std::string body = "Subject: dots\r\n\r\n.leading dot\r\nplain \xC3\xA9t\xC3\xA9\r\n";
  ASSERT_GT(content.size(), body.size());
  EXPECT_EQ(content.rfind("Received: from client.test ([127.0.0.1])\r\n", 0), 0u) << content;
  EXPECT_NE(content.find("by relay.test (stsrelay) with ESMTP id " + id), std::string::npos);
  EXPECT_EQ(content.substr(content.size() - body.size()), body);
}

TEST_F(ServerTest, AnswersPipelinedCommandsInOrderAndQueuesEachMessage) {
  RunningServer server(temp_.path(), {});
  SmtpTestClient client(server.endpoint());
  client.read_reply();
  client.command("EHLO client.test");
  std::string batch;
  for (int i = 0; i < 3; ++i) {
    batch += "MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n";
    batch += "Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n.\r\n";
  }
  client.send(batch + "QUIT\r\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client.read_reply().code, 250);
    EXPECT_EQ(client.read_reply().code, 250);
    EXPECT_EQ(client.read_reply().code, 354);
    ids.push_back(queued_id(client.read_reply()));
  }
  EXPECT_EQ(client.read_reply().code, 221);
  EXPECT_LT(ids[0], ids[1]);
  EXPECT_LT(ids[1], ids[2]);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(stored_content(temp_.path(), ids[i]).find("Subject: " + std::to_string(i)),
              std::string::npos);
  }
}

TEST_F(ServerTest, RefusesClientsOutsideTheAllowedNetworksAtConnect) {
  RunningServer server(temp_.path(), {.allow_clients = false});
  SmtpTestClient client(server.endpoint());
  auto greeting = client.read_reply();
  EXPECT_EQ(greeting.code, 554);
  EXPECT_EQ(greeting.first_line().rfind("5.7.1 ", 0), 0u) << greeting.first_line();
  auto mail = client.command("MAIL FROM:<a@b.test>");
  EXPECT_EQ(mail.code, 503);
  EXPECT_EQ(client.command("Quit").code, 221);  // verbs are case-insensitive
  EXPECT_TRUE(client.closed_by_server());

  auto store = queue::Store::open(temp_.path() / "spool");
  ASSERT_TRUE(store.has_value());
  EXPECT_TRUE(store->list()->empty());
}

TEST_F(ServerTest, StartTlsWithACertificateFromTheTestCa) {
  RunningServer server(temp_.path(), {.with_tls = true});
  SmtpTestClient client(server.endpoint());
  client.read_reply();
  EXPECT_TRUE(client.command("EHLO client.test").has_line("STARTTLS"));
  EXPECT_EQ(client.command("STARTTLS").code, 220);
  client.start_tls(server.ca_file(), "relay.test");
  auto ehlo = client.command("EHLO client.test");
  EXPECT_EQ(ehlo.code, 250);
  EXPECT_FALSE(ehlo.has_line("STARTTLS"));
  client.command("MAIL FROM:<a@client.test>");
  client.command("RCPT TO:<b@example.org>");
  client.command("DATA");
  client.send("Subject: secret\r\n\r\nbody\r\n.\r\n");
  std::string id = queued_id(client.read_reply());
  std::string content = stored_content(temp_.path(), id);
  EXPECT_NE(content.find("with ESMTPS id " + id), std::string::npos) << content;
}

TEST_F(ServerTest, PlaintextPipelinedAfterStartTlsIsNeverInterpreted) {
  RunningServer server(temp_.path(), {.with_tls = true});
  SmtpTestClient client(server.endpoint());
  client.read_reply();
  client.command("EHLO client.test");
  // CVE-2011-0411: the injected command must not be answered inside TLS.
  client.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
  EXPECT_EQ(client.read_reply().code, 220);
  client.start_tls(server.ca_file(), "relay.test");
  auto noop = client.command("NOOP");
  EXPECT_EQ(noop.code, 250);
  // Had the MAIL been kept, a second MAIL would be a nested-MAIL error.
  client.command("EHLO client.test");
  EXPECT_EQ(client.command("MAIL FROM:<a@client.test>").code, 250);
}

TEST_F(ServerTest, TurnsAwayConnectionsBeyondMaxConnections) {
  RunningServer server(temp_.path(), {.max_connections = 1});
  SmtpTestClient first(server.endpoint());
  EXPECT_EQ(first.read_reply().code, 220);
  SmtpTestClient second(server.endpoint());
  auto busy = second.read_reply();
  EXPECT_EQ(busy.code, 421);
  EXPECT_EQ(busy.first_line().rfind("4.7.0 ", 0), 0u) << busy.first_line();
  EXPECT_TRUE(second.closed_by_server());
  EXPECT_EQ(first.command("NOOP").code, 250);
}

TEST_F(ServerTest, ClosesIdleSessionsWith421) {
  RunningServer server(temp_.path(), {.idle_timeout = std::chrono::milliseconds(100)});
  SmtpTestClient client(server.endpoint());
  client.read_reply();
  auto timeout = client.read_reply();  // blocks until the server gives up on us
  EXPECT_EQ(timeout.code, 421);
  EXPECT_EQ(timeout.first_line().rfind("4.4.2 ", 0), 0u) << timeout.first_line();
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(ServerTest, StoppingSends421ToOpenSessionsAndKeepsWhatWasAcknowledged) {
  RunningServer server(temp_.path(), {});
  SmtpTestClient client(server.endpoint());
  client.read_reply();
  client.command("EHLO client.test");
  client.command("MAIL FROM:<a@client.test>");
  client.command("RCPT TO:<b@example.org>");
  client.command("DATA");
  client.send("Subject: before stop\r\n\r\nbody\r\n.\r\n");
  std::string id = queued_id(client.read_reply());
  client.command("MAIL FROM:<a@client.test>");

  std::thread stopper([&server] { server.stop(); });
  auto goodbye = client.read_reply();
  stopper.join();
  EXPECT_EQ(goodbye.code, 421);
  EXPECT_EQ(goodbye.first_line().rfind("4.3.2 ", 0), 0u) << goodbye.first_line();
  EXPECT_NE(stored_content(temp_.path(), id).find("Subject: before stop"), std::string::npos);
}

}  // namespace
}  // namespace stsrelay
