// The delivery engine end to end, in process: a real queue (SQLite and the
// group-committing writer), the c-ares resolver asking a fake DNS server,
// MTA-STS policies fetched over HTTPS from a fake policy host, and fake MX
// hosts with real STARTTLS and certificates from a test CA, all on loopback.
// The engine runs on this thread's io_context with a fake clock: retries and
// max_age come from moving the clock, never from sleeping.

#include "relay/delivery.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "dns/resolver.hpp"
#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"
#include "queue/store.hpp"
#include "relay/event_log.hpp"
#include "sts/policy_cache.hpp"
#include "sts/policy_engine.hpp"
#include "sts/policy_fetcher.hpp"
#include "sts/tls_session_counts.hpp"
#include "tests/support/fake_dns_server.hpp"
#include "tests/support/fake_https_server.hpp"
#include "tests/support/fake_smtp_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"

namespace stsrelay::relay {
namespace {

using namespace std::chrono_literals;
using queue::RecipientStatus;
using testing::DnsRcode;
using testing::DnsType;
using testing::FakeDnsServer;
using testing::FakeHttpsResponse;
using testing::FakeHttpsServer;
using testing::FakeSmtpMessage;
using testing::FakeSmtpRule;
using testing::FakeSmtpServer;
using testing::FakeSmtpSession;
using testing::FakeTlsVersion;
using testing::TempDir;
using testing::TestCa;
using Then = FakeSmtpRule::Then;

// Every wait for the engine is bounded by this, generous for ASan on a busy
// machine; no assertion is about how long anything took.
constexpr auto patience = 30s;

const std::string sender = "sender@a.test";
const std::string content =
    "From: <sender@a.test>\r\nTo: <rcpt@b.test>\r\nSubject: delivery test\r\n"
    "Message-ID: <1@a.test>\r\n\r\n.a line with a leading dot\r\nsecond line\r\n";

// The domains that publish MTA-STS policies in these tests: the policy
// host's certificate names mta-sts.DOMAIN for each.
const std::vector<std::string> policy_domains = {"b.test", "c.test", "untrusted.test",
                                                 "wrongname.test", "expired.test"};
constexpr const char* policy_address = "127.0.0.1";
// The sender's domain: bounces go to its MX, which takes them in plaintext.
constexpr const char* sender_mx_name = "mx.a.test";
constexpr const char* sender_mx_address = "127.0.0.20";

enum class Certificate { valid, untrusted, wrong_name, expired };

std::string policy_text(std::string_view mode, const std::vector<std::string>& mx) {
  std::string text = "version: STSv1\r\nmode: " + std::string(mode) + "\r\n";
  for (const auto& host : mx) {
    text += "mx: " + host + "\r\n";
  }
  return text + "max_age: 86400\r\n";
}

bool sent_command(const FakeSmtpSession& session, std::string_view verb) {
  return std::any_of(session.commands.begin(), session.commands.end(),
                     [verb](const std::string& command) { return command.starts_with(verb); });
}

bool saw_mail(const FakeSmtpServer& server) {
  auto sessions = server.sessions();
  return std::any_of(sessions.begin(), sessions.end(),
                     [](const FakeSmtpSession& session) { return sent_command(session, "MAIL"); });
}

class DeliveryTest : public ::testing::Test {
 protected:
  DeliveryTest() {
    TestCa::LeafOptions names;
    for (const auto& domain : policy_domains) {
      names.dns_names.push_back("mta-sts." + domain);
    }
    auto leaf = ca_.issue("policy-host", names);
    policy_server_ = std::make_unique<FakeHttpsServer>(FakeHttpsServer::Options{
        .address = policy_address, .cert_file = leaf.cert_file, .key_file = leaf.key_file});
    auto context = tls::make_client_context(ca_.ca_file().string());
    if (!context) {
      throw std::runtime_error(context.error());
    }
    client_tls_ = *context;
    dns_.add_mx("a.test", 10, sender_mx_name);
    dns_.add_a(sender_mx_name, sender_mx_address);
    setup_logging(LogConfig{}, std::make_shared<spdlog::sinks::ostream_sink_st>(log_));
  }

  ~DeliveryTest() override {
    stop_engine();
    setup_logging(LogConfig{});
    if (HasFailure()) {
      std::cerr << "the engine's log:\n" << log_.str();
    }
  }

  // The log lines of one event that contain every one of `parts`.
  std::vector<std::string> logged(std::string_view event,
                                  const std::vector<std::string>& parts = {}) const {
    std::vector<std::string> found;
    std::istringstream in(log_.str());
    for (std::string line; std::getline(in, line);) {
      if (line.find(" " + std::string(event) + " ") == std::string::npos) {
        continue;
      }
      if (std::all_of(parts.begin(), parts.end(), [&](const std::string& part) {
            return line.find(part) != std::string::npos;
          })) {
        found.push_back(line);
      }
    }
    return found;
  }

  // The RFC 8460 tally the engine keeps for one policy (an empty one when
  // no session was counted for it).
  sts::SessionTally tally(const std::string& domain, const std::string& type = "sts",
                          const std::string& id = "20260101") const {
    const auto& all = engine_->tls_sessions().tallies();
    auto found = all.find({domain, type, type == "sts" ? id : ""});
    return found == all.end() ? sts::SessionTally{} : found->second;
  }

  using Failures = std::map<sts::SessionFailure, std::uint64_t>;

  // ---- the world the engine delivers into ----------------------------------

  // An MTA-STS policy for the domain: its TXT record, its policy host, and
  // what that host serves (one body for every domain).
  void publish_policy(const std::string& domain, std::string_view mode,
                      const std::vector<std::string>& mx, const std::string& id = "20260101") {
    dns_.remove_records("_mta-sts." + domain, DnsType::txt);
    dns_.add_txt("_mta-sts." + domain, {"v=STSv1; id=" + id});
    dns_.remove_name("mta-sts." + domain);
    dns_.add_a("mta-sts." + domain, policy_address);
    policy_server_->set_response(FakeHttpsResponse::policy(policy_text(mode, mx)));
  }

  // A fake MX host with STARTTLS and the given certificate (or none).
  FakeSmtpServer::Options mx(const std::string& name, const std::string& address,
                             std::optional<Certificate> certificate = Certificate::valid) {
    FakeSmtpServer::Options options;
    options.address = address;
    options.hostname = name;
    if (!certificate) {
      return options;
    }
    TestCa::LeafOptions leaf_options{.dns_names = {name}};
    TestCa* issuer = &ca_;
    switch (*certificate) {
      case Certificate::valid:
        break;
      case Certificate::untrusted:
        issuer = &rogue_ca_;
        break;
      case Certificate::wrong_name:
        leaf_options.dns_names = {"not-" + name};
        break;
      case Certificate::expired:
        leaf_options.not_before_offset = -48h;
        leaf_options.not_after_offset = -1h;
        break;
    }
    auto leaf = issuer->issue(name + "-" + std::to_string(++leaves_), leaf_options);
    options.starttls = true;
    options.cert_file = leaf.cert_file;
    options.key_file = leaf.key_file;
    return options;
  }

  // Starts the MX hosts (and the sender's, for bounces) on one port, each
  // on its own address, and publishes their A records.
  void start_mx(std::vector<FakeSmtpServer::Options> hosts) {
    hosts.push_back(mx(sender_mx_name, sender_mx_address, std::nullopt));
    for (const auto& host : hosts) {
      if (host.hostname != sender_mx_name) {
        dns_.add_a(host.hostname, host.address);
      }
    }
    mx_ = testing::make_fake_smtp_servers(std::move(hosts));
  }
  FakeSmtpServer& mx_host(std::size_t index) { return *mx_.at(index); }
  FakeSmtpServer& sender_mx() { return *mx_.back(); }

  // ---- the engine ------------------------------------------------------------

  // The defaults, with idle connections kept for `idle` (a minute: however
  // slow the machine).
  DeliverySettings keeping_idle_connections(std::chrono::milliseconds idle = 1min) const {
    auto settings = default_settings();
    settings.connection_cache.idle_limit = idle;
    return settings;
  }

  DeliverySettings default_settings() const {
    DeliverySettings settings;
    settings.hostname = "relay.test";
    settings.port = mx_.front()->port();
    settings.max_connections = 20;
    settings.max_connections_per_domain = 5;
    settings.client.helo_name = "relay.test";
    settings.client.connect_timeout = 5s;
    settings.client.command_timeout = 5s;
    settings.client.tls_context = client_tls_;
    settings.retry.retry_min = 1min;
    settings.retry.retry_max = 10min;
    settings.retry.max_age = 1h;
    settings.poll_interval = 100ms;
    return settings;
  }

  void start_engine(std::optional<DeliverySettings> settings = std::nullopt) {
    auto opened = [&] {
      auto store = queue::Store::open(dir_.path() / "queue");
      if (!store) {
        throw std::runtime_error(store.error());
      }
      return std::move(*store);
    };
    reader_.emplace(opened());
    inspector_.emplace(opened());
    writer_ = std::make_unique<queue::GroupCommitWriter>(opened());
    auto resolver = dns::make_ares_resolver(io_.get_executor(), {{dns_.endpoint()}, 3000ms});
    if (!resolver) {
      throw std::runtime_error(resolver.error());
    }
    resolver_ = std::move(*resolver);
    sts::FetchOptions fetch;
    fetch.port = policy_server_->port();
    fetch.timeout = 10s;
    fetcher_ = sts::make_https_policy_fetcher(io_.get_executor(), *resolver_, client_tls_, fetch);
    cache_.emplace(dir_.path() / "sts-cache");
    auto clock = [this] { return now_; };
    policies_ = std::make_unique<sts::PolicyEngine>(*resolver_, *fetcher_, *cache_,
                                                    sts::PolicyEngine::Options{}, clock);
    engine_ = std::make_unique<DeliveryEngine>(io_.get_executor(),
                                               settings.value_or(default_settings()), *reader_,
                                               *writer_, ids_, *resolver_, policies_.get(), clock);
    engine_->start();
  }

  void stop_engine() {
    if (!engine_) {
      return;
    }
    bool stopped = false;
    asio::co_spawn(io_, engine_->stop(), [&](std::exception_ptr failure) {
      stopped = true;
      if (failure) {
        std::rethrow_exception(failure);
      }
    });
    run_until([&] { return stopped; });
    // Let the scheduler see that it is to stop before the engine goes.
    io_.restart();
    io_.poll();
    engine_.reset();
    resolver_->cancel();
    io_.restart();
    io_.poll();
  }

  // Runs the event loop until done() holds; false after `patience`.
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) {
        return false;
      }
      if (io_.stopped()) {
        io_.restart();  // it ran out of work once, e.g. between two engines
      }
      io_.run_for(10ms);
    }
    return true;
  }

  // Runs the event loop for a while: to show that nothing happens.
  void run_for(std::chrono::milliseconds duration) {
    io_.restart();
    io_.run_for(duration);
  }

  // Moves the fake clock and lets the engine look at the queue again.
  void advance(std::chrono::system_clock::duration by) {
    now_ += by;
    engine_->wake();
  }

  // ---- the queue ---------------------------------------------------------------

  std::string enqueue(std::vector<std::string> recipients, std::string body = content,
                      std::string from = sender, bool smtputf8 = false) {
    queue::NewMessage message;
    message.smtputf8 = smtputf8;
    message.id = ids_.next();
    message.arrival = now_;
    message.sender = std::move(from);
    message.recipients = std::move(recipients);
    message.client_address = "127.0.0.1";
    message.helo = "client.a.test";
    message.content = std::move(body);
    if (!inspector_) {
      // Before the engine starts: mail it finds waiting.
      auto store = queue::Store::open(dir_.path() / "queue");
      EXPECT_TRUE(store) << store.error();
      auto inserted = store->insert(std::span(&message, 1));
      EXPECT_TRUE(inserted) << inserted.error();
      return message.id;
    }
    auto inserted = inspector_->insert(std::span(&message, 1));
    EXPECT_TRUE(inserted) << inserted.error();
    engine_->wake();
    return message.id;
  }

  std::optional<queue::MessageRecord> message(const std::string& id) {
    auto found = inspector_->message(id);
    EXPECT_TRUE(found) << found.error();
    return found ? *found : std::nullopt;
  }

  std::vector<queue::MessageRecord> queued() {
    auto all = inspector_->list();
    EXPECT_TRUE(all) << all.error();
    return all ? *all : std::vector<queue::MessageRecord>{};
  }

  // The recipient's record, once it has had `attempts` attempts.
  std::optional<queue::RecipientRecord> wait_for_attempts(const std::string& id,
                                                          const std::string& address,
                                                          unsigned attempts = 1) {
    std::optional<queue::RecipientRecord> seen;
    run_until([&] {
      auto record = message(id);
      if (!record) {
        return false;
      }
      for (const auto& recipient : record->recipients) {
        if (recipient.address == address && recipient.attempts >= attempts) {
          seen = recipient;
        }
      }
      return seen.has_value() && engine_->attempts_in_flight() == 0;
    });
    return seen;
  }

  // The queue forgets a message before its attempt has logged the outcome:
  // wait for both.
  bool wait_until_gone(const std::string& id) {
    return run_until(
        [&] { return !message(id).has_value() && engine_->attempts_in_flight() == 0; });
  }

  bool wait_for_messages(FakeSmtpServer& server, std::size_t count) {
    return run_until([&] { return server.messages().size() >= count; });
  }

  // Waits until the server has seen `sessions` sessions, the last ended by QUIT.
  bool wait_for_quit(FakeSmtpServer& server, std::size_t sessions) {
    return run_until([&] {
      auto seen = server.sessions();
      return seen.size() == sessions && seen.back().quit;
    });
  }

  // `count` messages, one recipient each, to `domain`.
  void enqueue_one_each(std::size_t count, const std::string& domain) {
    for (std::size_t i = 0; i < count; ++i) {
      enqueue({"rcpt" + std::to_string(i) + "@" + domain});
    }
  }

  // Waits for the bounce the sender's MX received and returns it.
  std::optional<FakeSmtpMessage> wait_for_bounce(std::size_t count = 1) {
    if (!wait_for_messages(sender_mx(), count)) {
      return std::nullopt;
    }
    return sender_mx().messages().at(count - 1);
  }

  std::ostringstream log_;
  TempDir dir_;
  TestCa ca_{dir_.path() / "ca"};
  TestCa rogue_ca_{dir_.path() / "rogue-ca", "someone else's CA"};
  FakeDnsServer dns_;
  std::unique_ptr<FakeHttpsServer> policy_server_;
  std::vector<std::unique_ptr<FakeSmtpServer>> mx_;
  std::shared_ptr<asio::ssl::context> client_tls_;
  int leaves_ = 0;
  queue::TimePoint now_ =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());

  asio::io_context io_{1};
  std::optional<queue::Store> reader_;
  std::optional<queue::Store> inspector_;
  std::unique_ptr<queue::GroupCommitWriter> writer_;
  queue::QueueIdGenerator ids_;
  std::unique_ptr<dns::Resolver> resolver_;
  std::unique_ptr<sts::PolicyFetcher> fetcher_;
  std::optional<sts::PolicyCache> cache_;
  std::unique_ptr<sts::PolicyEngine> policies_;
  std::unique_ptr<DeliveryEngine> engine_;
};

void expect_bounce_report(const FakeSmtpMessage& bounce, const std::string& recipient,
                          std::string_view status) {
  EXPECT_EQ(bounce.sender, "");  // the null reverse-path: a bounce never bounces
  EXPECT_EQ(bounce.recipients, std::vector<std::string>{sender});
  EXPECT_NE(bounce.data.find("multipart/report"), std::string::npos) << bounce.data;
  EXPECT_NE(bounce.data.find("report-type=delivery-status"), std::string::npos);
  EXPECT_NE(bounce.data.find("Final-Recipient: rfc822; " + recipient), std::string::npos)
      << bounce.data;
  EXPECT_NE(bounce.data.find("Status: " + std::string(status)), std::string::npos) << bounce.data;
  EXPECT_NE(bounce.data.find("Action: failed"), std::string::npos);
  EXPECT_NE(bounce.data.find("Subject: delivery test"), std::string::npos)
      << "the original header section is returned";
}

// ---- 1. enforce, valid certificate ---------------------------------------------

TEST_F(DeliveryTest, EnforceWithValidCertificateDeliversOverTls) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test", "other@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));

  auto messages = mx_host(0).messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].sender, sender);
  EXPECT_EQ(messages[0].recipients, (std::vector<std::string>{"rcpt@b.test", "other@b.test"}));
  EXPECT_EQ(messages[0].data, content);
  auto sessions = mx_host(0).sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].tls);
  EXPECT_TRUE(sessions[0].tls_version == "TLSv1.2" || sessions[0].tls_version == "TLSv1.3")
      << sessions[0].tls_version;
  EXPECT_EQ(sessions[0].server_name, "mx1.b.test");
  EXPECT_EQ(sessions[0].ehlo_name, "relay.test");
  EXPECT_TRUE(queued().empty());
  EXPECT_EQ(policy_server_->requests().size(), 1u);
  EXPECT_EQ(tally("b.test").successful, 1u);
  EXPECT_EQ(tally("b.test").failed(), 0u);
  EXPECT_EQ(
      logged("sent", {"queue_id=" + id, "mx=mx1.b.test", "ip=127.0.0.21", "policy_mode=enforce",
                      "policy_id=20260101", "verification=valid", "tls_version=TLSv1."})
          .size(),
      1u)
      << log_.str();
}

// ---- 2, 3, 5. enforce refuses what is not good enough --------------------------

struct EnforceRefusal {
  std::string name;
  std::string domain;
  std::function<void(FakeSmtpServer::Options&)> change;
  std::optional<Certificate> certificate;
  // What the recipient's last error must name: the RFC 8460 result type or
  // the certificate's detail.
  std::vector<std::string> reason;
};

TEST_F(DeliveryTest, EnforceDefersWhenTlsIsNotGoodEnough) {
  const std::vector<EnforceRefusal> cases = {
      {"untrusted CA", "untrusted.test", {}, Certificate::untrusted, {"certificate-not-trusted"}},
      {"wrong name", "wrongname.test", {}, Certificate::wrong_name, {"certificate-host-mismatch"}},
      {"expired", "expired.test", {}, Certificate::expired, {"certificate-expired"}},
      {"no STARTTLS", "b.test", {}, std::nullopt, {"starttls-not-supported"}},
  };
  std::vector<FakeSmtpServer::Options> hosts;
  std::vector<std::string> mx_names;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const std::string name = "mx." + cases[i].domain;
    mx_names.push_back(name);
    hosts.push_back(mx(name, "127.0.0." + std::to_string(21 + i), cases[i].certificate));
    dns_.add_mx(cases[i].domain, 10, name);
  }
  for (const auto& test : cases) {
    publish_policy(test.domain, "enforce", mx_names);
  }
  start_mx(hosts);
  start_engine();

  std::vector<std::string> ids;
  for (const auto& test : cases) {
    ids.push_back(enqueue({"rcpt@" + test.domain}));
  }
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    auto record = wait_for_attempts(ids[i], "rcpt@" + cases[i].domain);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->status, RecipientStatus::deferred);
    EXPECT_EQ(record->attempts, 1u);
    ASSERT_TRUE(record->next_attempt);
    EXPECT_GT(*record->next_attempt, now_);
    for (const auto& reason : cases[i].reason) {
      EXPECT_NE(record->last_error.find(reason), std::string::npos) << record->last_error;
    }
    EXPECT_NE(record->last_error.find("MTA-STS"), std::string::npos) << record->last_error;
    EXPECT_FALSE(saw_mail(mx_host(i))) << "never delivered below what the policy demands";
    EXPECT_EQ(
        logged("deferred", {"queue_id=" + ids[i], "verification=" + cases[i].reason[0]}).size(), 1u)
        << log_.str();
    EXPECT_GE(mx_host(i).connections(), 1u);
    EXPECT_EQ(
        tally(cases[i].domain).failures,
        (Failures{{{cases[i].reason[0], mx_names[i], "127.0.0." + std::to_string(21 + i)}, 1}}));
    EXPECT_EQ(tally(cases[i].domain).successful, 0u);
  }
  EXPECT_TRUE(sender_mx().messages().empty()) << "an enforce failure is no bounce by itself";
}

TEST_F(DeliveryTest, EnforceDefersWhenStarttlsIsStripped) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto stripped = mx("mx1.b.test", "127.0.0.21");
  // A man in the middle answers STARTTLS himself.
  stripped.rules.push_back({.command = "STARTTLS", .reply = "454 4.7.0 TLS not available"});
  start_mx({stripped});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_NE(record->last_error.find("starttls-not-supported"), std::string::npos)
      << record->last_error;
  EXPECT_FALSE(saw_mail(mx_host(0)));
}

TEST_F(DeliveryTest, EnforceDefersOnTls11OnlyServer) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto old = mx("mx1.b.test", "127.0.0.21");
  old.tls_min = FakeTlsVersion::tls1_1;
  old.tls_max = FakeTlsVersion::tls1_1;
  start_mx({old});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_FALSE(record->last_error.empty());
  EXPECT_FALSE(saw_mail(mx_host(0)));
  for (const auto& session : mx_host(0).sessions()) {
    EXPECT_FALSE(session.tls) << "no TLS 1.1 session may carry mail under enforce";
  }
}

// ---- 4. enforce: only the MX hosts the policy lists ------------------------------

TEST_F(DeliveryTest, EnforceSkipsAnMxTheNotListedAndUsesTheBackup) {
  publish_policy("b.test", "enforce", {"backup.b.test"});
  dns_.add_mx("b.test", 10, "primary.b.test");
  dns_.add_mx("b.test", 20, "backup.b.test");
  start_mx({mx("primary.b.test", "127.0.0.21"), mx("backup.b.test", "127.0.0.22")});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(1), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).connections(), 0u) << "the unlisted primary is never contacted";
  auto sessions = mx_host(1).sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].tls);
  EXPECT_EQ(sessions[0].server_name, "backup.b.test");
  EXPECT_EQ(mx_host(1).messages().at(0).data, content);
  EXPECT_EQ(logged("sts_mx_not_listed", {"mx=primary.b.test", "action=skipped"}).size(), 1u)
      << log_.str();
}

TEST_F(DeliveryTest, EnforceNeverTriesAHostThePolicyDoesNotList) {
  // b.test's only MX is not listed; untrusted.test has no MX records, and
  // its implicit MX (the domain itself) is not listed either.
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  publish_policy("untrusted.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "rogue.b.test");
  start_mx({mx("rogue.b.test", "127.0.0.21"), mx("untrusted.test", "127.0.0.22")});
  start_engine();

  const std::string listed_elsewhere = enqueue({"rcpt@b.test"});
  const std::string implicit = enqueue({"rcpt@untrusted.test"});
  for (const auto& [id, address] : {std::pair{listed_elsewhere, std::string("rcpt@b.test")},
                                    std::pair{implicit, std::string("rcpt@untrusted.test")}}) {
    SCOPED_TRACE(address);
    auto record = wait_for_attempts(id, address);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->status, RecipientStatus::deferred);
    EXPECT_NE(record->last_error.find("validation-failure"), std::string::npos)
        << record->last_error;
    EXPECT_NE(record->last_error.find("not listed"), std::string::npos) << record->last_error;
    EXPECT_EQ(logged("deferred", {"queue_id=" + id, "verification=validation-failure"}).size(), 1u);
  }
  EXPECT_EQ(mx_host(0).connections(), 0u);
  EXPECT_EQ(mx_host(1).connections(), 0u);
  EXPECT_EQ(tally("b.test").failures, (Failures{{{"validation-failure", "rogue.b.test", ""}, 1}}));
  EXPECT_EQ(tally("untrusted.test").failures,
            (Failures{{{"validation-failure", "untrusted.test", ""}, 1}}));
}

// ---- 6. testing: failures are reported, mail still goes ----------------------------

TEST_F(DeliveryTest, TestingModeDeliversDespiteABadCertificate) {
  publish_policy("b.test", "testing", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21", Certificate::untrusted)});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  auto sessions = mx_host(0).sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].tls) << "over TLS, although the certificate does not validate";
  EXPECT_EQ(mx_host(0).messages().at(0).data, content);
  EXPECT_EQ(policy_server_->requests().size(), 1u);
  EXPECT_EQ(logged("sts_testing_failure",
                   {"queue_id=" + id, "mx=mx1.b.test", "result_type=certificate-not-trusted"})
                .size(),
            1u)
      << log_.str();
  EXPECT_EQ(logged("sent", {"queue_id=" + id, "policy_mode=testing"}).size(), 1u);
  EXPECT_EQ(tally("b.test").failures,
            (Failures{{{"certificate-not-trusted", "mx1.b.test", "127.0.0.21"}, 1}}));
  EXPECT_EQ(tally("b.test").successful, 0u);
}

// ---- 7. no policy: opportunistic TLS -----------------------------------------------

TEST_F(DeliveryTest, WithoutPolicyDeliversInPlaintextOrOverUnverifiedTls) {
  dns_.add_mx("plain.test", 10, "mx.plain.test");
  dns_.add_mx("selfish.test", 10, "mx.selfish.test");
  start_mx({mx("mx.plain.test", "127.0.0.21", std::nullopt),
            mx("mx.selfish.test", "127.0.0.22", Certificate::untrusted)});
  start_engine();

  const std::string plain = enqueue({"rcpt@plain.test"});
  const std::string selfish = enqueue({"rcpt@selfish.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_for_messages(mx_host(1), 1));
  ASSERT_TRUE(wait_until_gone(plain));
  ASSERT_TRUE(wait_until_gone(selfish));

  auto plain_sessions = mx_host(0).sessions();
  ASSERT_EQ(plain_sessions.size(), 1u);
  EXPECT_FALSE(plain_sessions[0].tls);
  EXPECT_EQ(mx_host(0).messages().at(0).data, content);
  auto tls_sessions = mx_host(1).sessions();
  ASSERT_EQ(tls_sessions.size(), 1u);
  EXPECT_TRUE(tls_sessions[0].tls);
  EXPECT_EQ(mx_host(1).messages().at(0).data, content);
  EXPECT_TRUE(policy_server_->requests().empty());
  EXPECT_EQ(logged("sent", {"queue_id=" + plain, "tls_version=\"\"", "policy_mode=none"}).size(),
            1u)
      << log_.str();
  EXPECT_EQ(logged("sent", {"queue_id=" + selfish, "tls_version=TLSv1.", "policy_mode=none",
                            "verification=certificate-not-trusted"})
                .size(),
            1u)
      << log_.str();
  // Without a policy a session succeeds when it is encrypted at all.
  EXPECT_EQ(tally("plain.test", "no-policy-found").failures,
            (Failures{{{"starttls-not-supported", "mx.plain.test", "127.0.0.21"}, 1}}));
  EXPECT_EQ(tally("selfish.test", "no-policy-found").successful, 1u);
  EXPECT_EQ(tally("selfish.test", "no-policy-found").failed(), 0u);
}

TEST_F(DeliveryTest, APolicyThatCannotBeFetchedIsReportedAndMailGoesAsWithoutOne) {
  // The TXT record announces a policy the HTTPS host does not serve, and
  // nothing is cached: RFC 8461 §5 says deliver as if there were no policy.
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  FakeHttpsResponse missing;
  missing.status = 404;
  missing.body = "not here";
  policy_server_->set_response(missing);
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21", Certificate::untrusted)});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).messages().size(), 1u);
  EXPECT_EQ(logged("sts_discovery",
                   {"domain=b.test", "result_type=sts-policy-fetch-error", "cached_policy=false"})
                .size(),
            1u)
      << log_.str();
  EXPECT_EQ(logged("sent", {"queue_id=" + id, "policy_mode=none"}).size(), 1u);
  EXPECT_EQ(tally("b.test", "no-policy-found").failures,
            (Failures{{{"sts-policy-fetch-error", "", ""}, 1}}));
  EXPECT_EQ(tally("b.test", "no-policy-found").successful, 1u);
}

// ---- 8. retries and per-recipient results ----------------------------------------------

TEST_F(DeliveryTest, TemporaryFailureIsRetriedAndDeliveredOnce) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "MESSAGE", .reply = "451 4.3.0 try again later", .times = 1});
  start_mx({host});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_NE(record->last_error.find("451"), std::string::npos) << record->last_error;
  ASSERT_TRUE(record->next_attempt);
  EXPECT_GT(*record->next_attempt, now_);
  EXPECT_TRUE(mx_host(0).messages().empty());

  // Nothing happens before the retry is due.
  engine_->wake();
  run_for(50ms);
  EXPECT_EQ(mx_host(0).connections(), 1u);

  advance(*record->next_attempt - now_);
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).messages().size(), 1u);
  // The retry came at once (the clock is fake): over the idle connection,
  // unless the machine was too slow for it to stay parked.
  EXPECT_LE(mx_host(0).connections(), 2u);
  EXPECT_TRUE(sender_mx().messages().empty());
}

TEST_F(DeliveryTest, PermanentFailureForOneRecipientBouncesOnlyThatOne) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back(
      {.command = "RCPT", .argument = "<bad@b.test>", .reply = "550 5.1.1 no such user"});
  start_mx({host});
  start_engine();

  const std::string id = enqueue({"good@b.test", "bad@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  auto delivered = mx_host(0).messages();
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0].recipients, std::vector<std::string>{"good@b.test"});

  auto bounce = wait_for_bounce();
  ASSERT_TRUE(bounce);
  expect_bounce_report(*bounce, "bad@b.test", "5.1.1");
  EXPECT_NE(bounce->data.find("no such user"), std::string::npos);
  EXPECT_EQ(bounce->data.find("good@b.test\r\nAction"), std::string::npos);
  EXPECT_TRUE(run_until([&] { return queued().empty(); })) << "the bounce left the queue too";
}

TEST_F(DeliveryTest, FlushRetriesDeferredMailNow) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "RCPT", .reply = "450 4.2.0 mailbox busy", .times = 1});
  start_mx({host});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);

  auto flushed = engine_->flush();  // `stsrelay queue flush`; the clock stands still
  ASSERT_TRUE(flushed) << flushed.error();
  EXPECT_EQ(*flushed, 1u);
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).messages().size(), 1u);
}

TEST_F(DeliveryTest, RestartResumesDeferredMail) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "MESSAGE", .reply = "451 4.3.0 try again later", .times = 1});
  start_mx({host});
  start_engine();
  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);

  // A new engine over the same queue directory, as after a restart.
  stop_engine();
  now_ = *record->next_attempt;
  start_engine();
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).messages().size(), 1u);
  EXPECT_EQ(logged("sent", {"queue_id=" + id, "attempts=2"}).size(), 1u) << log_.str();
}

TEST_F(DeliveryTest, FailingMxHostsAreSkippedForTheNextOne) {
  // Nothing listens on the first host's address; the second greets with 421.
  dns_.add_mx("b.test", 10, "down.b.test");
  dns_.add_a("down.b.test", "127.0.0.29");
  dns_.add_mx("b.test", 20, "busy.b.test");
  dns_.add_mx("b.test", 30, "good.b.test");
  auto busy = mx("busy.b.test", "127.0.0.21");
  busy.rules.push_back(
      {.command = "CONNECT", .reply = "421 4.3.2 too busy", .then = Then::answer_and_close});
  start_mx({busy, mx("good.b.test", "127.0.0.22")});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(1), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).connections(), 1u);
  EXPECT_FALSE(saw_mail(mx_host(0)));
  EXPECT_EQ(mx_host(1).messages().at(0).data, content);
}

TEST_F(DeliveryTest, TheAttemptLogDescribesTheLastHostTriedOnly) {
  // The first host fails on its certificate, the second cannot be reached:
  // the line must not report the first host's TLS as the second's.
  publish_policy("b.test", "enforce", {"*.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  dns_.add_mx("b.test", 20, "down.b.test");
  dns_.add_a("down.b.test", "127.0.0.29");
  start_mx({mx("mx1.b.test", "127.0.0.21", Certificate::untrusted)});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_EQ(logged("deferred", {"queue_id=" + id, "mx=down.b.test", "ip=127.0.0.29",
                                "tls_version=\"\"", "verification=none"})
                .size(),
            1u)
      << log_.str();
}

TEST_F(DeliveryTest, MessagesTheMxCannotTakeBounceWithoutBeingSent) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.size_limit = 200;
  host.smtputf8 = false;
  start_mx({host});
  start_engine();

  const std::string large = enqueue({"large@b.test"}, content + std::string(300, 'x') + "\r\n");
  const std::string international =
      enqueue({"international@b.test"}, content, sender, /*smtputf8=*/true);
  auto bounces = wait_for_bounce(2);
  ASSERT_TRUE(bounces);
  EXPECT_TRUE(wait_until_gone(large));
  EXPECT_TRUE(wait_until_gone(international));
  EXPECT_FALSE(saw_mail(mx_host(0))) << "refused before MAIL";
  std::string both;
  for (const auto& bounce : sender_mx().messages()) {
    both += bounce.data;
  }
  EXPECT_NE(both.find("Final-Recipient: rfc822; large@b.test"), std::string::npos) << both;
  EXPECT_NE(both.find("Status: 5.3.4"), std::string::npos) << both;
  EXPECT_NE(both.find("international@b.test"), std::string::npos) << both;
  EXPECT_NE(both.find("Status: 5.6.7"), std::string::npos) << both;
}

// ---- 9. enforce until max_age ---------------------------------------------------------

TEST_F(DeliveryTest, EnforceFailureBouncesAtMaxAgeAfterRediscovery) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21", Certificate::untrusted)});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_EQ(policy_server_->requests().size(), 1u);

  advance(default_settings().retry.max_age + 1s);
  auto bounce = wait_for_bounce();
  ASSERT_TRUE(bounce);
  EXPECT_TRUE(wait_until_gone(id));
  expect_bounce_report(*bounce, "rcpt@b.test", "5.7.5");  // the deferral's 4.7.5, made permanent
  EXPECT_NE(bounce->data.find("MTA-STS"), std::string::npos) << bounce->data;
  EXPECT_NE(bounce->data.find("certificate-not-trusted"), std::string::npos) << bounce->data;
  EXPECT_EQ(policy_server_->requests().size(), 2u) << "re-discovered before the bounce";
  EXPECT_EQ(logged("sts_rediscovery", {"queue_id=" + id}).size(), 1u);
  EXPECT_FALSE(saw_mail(mx_host(0)));
}

TEST_F(DeliveryTest, EnforceFailureAtMaxAgeDeliversWhenThePolicyWasWithdrawn) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21", Certificate::untrusted)});
  start_engine();

  const std::string id = enqueue({"rcpt@b.test"});
  auto record = wait_for_attempts(id, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);

  // The domain now serves mode none under the same id: only a re-discovery
  // (which fetches whatever the id) learns it; the cached policy still says enforce.
  policy_server_->set_response(FakeHttpsResponse::policy(policy_text("none", {"mx1.b.test"})));
  advance(default_settings().retry.max_age + 1s);
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(mx_host(0).messages().at(0).data, content);
  EXPECT_EQ(policy_server_->requests().size(), 2u);
  auto sessions = mx_host(0).sessions();
  ASSERT_FALSE(sessions.empty());
  EXPECT_TRUE(sessions.back().tls) << "opportunistic TLS, certificate unverified";
  EXPECT_TRUE(sender_mx().messages().empty()) << "no bounce";
  EXPECT_EQ(logged("sent", {"queue_id=" + id, "policy_mode=none", "attempts=2"}).size(), 1u)
      << log_.str();
}

// ---- 10. what DNS says ---------------------------------------------------------------

TEST_F(DeliveryTest, NullMxBouncesAtOnce) {
  dns_.add_mx("nullmx.test", 0, ".");
  start_mx({});
  start_engine();

  const std::string id = enqueue({"rcpt@nullmx.test"});
  auto bounce = wait_for_bounce();
  ASSERT_TRUE(bounce);
  EXPECT_TRUE(wait_until_gone(id));
  expect_bounce_report(*bounce, "rcpt@nullmx.test", "5.1.10");
}

TEST_F(DeliveryTest, NonexistentDomainBouncesAtOnce) {
  start_mx({});
  start_engine();

  const std::string id = enqueue({"rcpt@nowhere.test"});
  // A bounce that bounces is dropped, not reported (RFC 5321 §4.5.5).
  const std::string bounce_of_bounce = enqueue({"mailer-daemon@nowhere.test"}, content, "");
  auto bounce = wait_for_bounce();
  ASSERT_TRUE(bounce);
  EXPECT_TRUE(wait_until_gone(id));
  EXPECT_TRUE(wait_until_gone(bounce_of_bounce));
  expect_bounce_report(*bounce, "rcpt@nowhere.test", "5.1.2");
  EXPECT_TRUE(run_until([&] { return queued().empty(); }));
  EXPECT_EQ(sender_mx().messages().size(), 1u);
}

TEST_F(DeliveryTest, DnsServerFailureDefers) {
  dns_.add_a("servfail.test", "127.0.0.99");
  dns_.set_rcode("servfail.test", DnsType::mx, DnsRcode::servfail);
  start_mx({});
  start_engine();

  const std::string id = enqueue({"rcpt@servfail.test"});
  auto record = wait_for_attempts(id, "rcpt@servfail.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
  EXPECT_FALSE(record->last_error.empty());
  EXPECT_TRUE(sender_mx().messages().empty());
}

TEST_F(DeliveryTest, DomainWithoutMxRecordsIsItsOwnMx) {
  start_mx({mx("implicit.test", "127.0.0.21")});  // publishes implicit.test's A record
  start_engine();

  const std::string id = enqueue({"rcpt@implicit.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(id));
  auto sessions = mx_host(0).sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].server_name, "implicit.test");
}

// ---- 11. held and deleted messages ----------------------------------------------------

TEST_F(DeliveryTest, HeldMessageWaitsUntilReleased) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine();

  // Both are due at once; only the one not held goes.
  const std::string held = ids_.next();
  queue::NewMessage waiting;
  waiting.id = held;
  waiting.arrival = now_;
  waiting.sender = sender;
  waiting.recipients = {"held@b.test"};
  waiting.content = content;
  ASSERT_TRUE(inspector_->insert(std::span(&waiting, 1)));
  ASSERT_TRUE(inspector_->set_held(held, true));
  const std::string free = enqueue({"free@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(free));
  engine_->wake();
  run_for(50ms);

  auto record = message(held);
  ASSERT_TRUE(record);
  EXPECT_TRUE(record->held);
  EXPECT_EQ(record->recipients.at(0).attempts, 0u);
  EXPECT_EQ(record->recipients.at(0).status, RecipientStatus::queued);
  EXPECT_EQ(mx_host(0).messages().size(), 1u);

  ASSERT_TRUE(inspector_->set_held(held, false));
  engine_->wake();
  ASSERT_TRUE(wait_for_messages(mx_host(0), 2));
  ASSERT_TRUE(wait_until_gone(held));
  EXPECT_EQ(mx_host(0).messages().at(1).recipients, std::vector<std::string>{"held@b.test"});
}

TEST_F(DeliveryTest, MessageDeletedDuringItsAttempt) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "MAIL", .then = Then::hang, .times = 1});
  start_mx({host});
  auto settings = default_settings();
  settings.client.command_timeout = 1s;
  start_engine(settings);

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(run_until([&] { return saw_mail(mx_host(0)); }));
  ASSERT_TRUE(inspector_->remove(id));  // `stsrelay queue delete` while MAIL is unanswered
  ASSERT_TRUE(run_until([&] { return engine_->attempts_in_flight() == 0; }));
  EXPECT_FALSE(message(id));
  EXPECT_TRUE(queued().empty()) << "the attempt's outcome does not bring it back";
  EXPECT_TRUE(sender_mx().messages().empty());

  // The engine carries on.
  const std::string next = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(wait_until_gone(next));
}

// ---- 12. connection reuse and limits ------------------------------------------------------

TEST_F(DeliveryTest, OneConnectionPerDomainAtATimeAndReusedForTheNextMessage) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  auto settings = keeping_idle_connections();
  settings.max_connections_per_domain = 1;
  start_engine(settings);

  constexpr std::size_t count = 6;
  enqueue_one_each(count, "b.test");
  ASSERT_TRUE(wait_for_messages(mx_host(0), count));
  ASSERT_TRUE(run_until([&] { return queued().empty(); }));
  EXPECT_EQ(mx_host(0).most_concurrent_connections(), 1u);
  EXPECT_EQ(mx_host(0).connections(), 1u) << "every message went over the first connection";
  EXPECT_EQ(logged("sent", {"mx=mx1.b.test", "tls_version=TLSv1.3", "verification=valid"}).size(),
            count)
      << "a reused connection reports the TLS it was opened with";
  EXPECT_EQ(engine_->idle_connections(), 1u);
}

TEST_F(DeliveryTest, ABusyDomainsMessagesFollowEachOtherWithoutWaitingForTheNextPass) {
  // One pass at the start and none after: what that pass could not start
  // for want of a slot starts as each attempt ends.
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  constexpr std::size_t count = 5;
  enqueue_one_each(count, "b.test");
  auto settings = keeping_idle_connections();
  settings.max_connections_per_domain = 2;
  settings.poll_interval = std::chrono::hours(1);
  settings.min_scan_interval = std::chrono::hours(1);
  start_engine(settings);

  ASSERT_TRUE(wait_for_messages(mx_host(0), count));
  ASSERT_TRUE(run_until([&] { return queued().empty(); }));
  EXPECT_EQ(mx_host(0).most_concurrent_connections(), 2u);
  EXPECT_EQ(mx_host(0).connections(), 2u) << "the two connections carried everything";
}

TEST_F(DeliveryTest, IdleConnectionsAreClosedWithQuit) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine(keeping_idle_connections(20ms));

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(id));
  ASSERT_TRUE(run_until([&] { return engine_->idle_connections() == 0; }));
  ASSERT_TRUE(wait_for_quit(mx_host(0), 1));
}

TEST_F(DeliveryTest, ANewConnectionToARecentMxResumesItsTlsSessionWithItsVerdict) {
  publish_policy("b.test", "enforce", {"mx1.b.test"});
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine(keeping_idle_connections(20ms));

  const std::string first = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(first));
  ASSERT_TRUE(wait_for_quit(mx_host(0), 1));
  const std::string second = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(second));

  EXPECT_EQ(mx_host(0).connections(), 2u) << "the first connection was closed in between";
  EXPECT_EQ(logged("sent", {"queue_id=" + first, "tls_resumed=false", "verification=valid"}).size(),
            1u)
      << log_.str();
  EXPECT_EQ(logged("sent", {"queue_id=" + second, "tls_resumed=true", "policy_mode=enforce",
                            "verification=valid"})
                .size(),
            1u)
      << log_.str();
}

TEST_F(DeliveryTest, StoppingTheEngineClosesIdleConnectionsWithQuit) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine(keeping_idle_connections());

  const std::string id = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(id));
  EXPECT_EQ(engine_->idle_connections(), 1u);
  stop_engine();
  ASSERT_TRUE(wait_for_quit(mx_host(0), 1));
}

TEST_F(DeliveryTest, AnIdleConnectionTheServerDroppedIsReplacedByANewOne) {
  dns_.add_mx("b.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  // The server times the idle session out: RSET finds it gone.
  host.rules.push_back({.command = "RSET", .then = Then::close, .times = 1});
  start_mx({host});
  start_engine(keeping_idle_connections());

  const std::string first = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(first));
  const std::string second = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(second));
  EXPECT_EQ(mx_host(0).messages().size(), 2u);
  EXPECT_EQ(mx_host(0).connections(), 2u);
  EXPECT_EQ(logged("sent", {"queue_id=" + second, "attempts=1"}).size(), 1u);
}

TEST_F(DeliveryTest, AConnectionOpenedWithoutAPolicyDoesNotServeAnEnforcedDomain) {
  // Both domains use the same MX host; the first has no policy, the second
  // enforces one: its message needs a connection validated for it.
  dns_.add_mx("b.test", 10, "mx1.b.test");
  dns_.add_mx("c.test", 10, "mx1.b.test");
  publish_policy("c.test", "enforce", {"mx1.b.test"});
  start_mx({mx("mx1.b.test", "127.0.0.21")});
  start_engine(keeping_idle_connections());

  const std::string plain = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(wait_until_gone(plain));
  const std::string enforced = enqueue({"rcpt@c.test"});
  ASSERT_TRUE(wait_until_gone(enforced));
  EXPECT_EQ(mx_host(0).connections(), 2u);
  EXPECT_EQ(engine_->idle_connections(), 2u);
  EXPECT_EQ(
      logged("sent", {"queue_id=" + enforced, "policy_mode=enforce", "verification=valid"}).size(),
      1u);
}

TEST_F(DeliveryTest, TheOverallConnectionLimitHolds) {
  // Four domains on one host whose RCPT hangs: without the limit, four
  // sessions would wait at once.
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "RCPT", .then = Then::hang});
  start_mx({host});
  auto settings = default_settings();
  settings.max_connections = 2;
  settings.client.command_timeout = 300ms;
  start_engine(settings);

  std::vector<std::pair<std::string, std::string>> sent;  // (id, recipient)
  for (const std::string domain : {"b.test", "c.test", "d.test", "e.test"}) {
    dns_.add_mx(domain, 10, "mx1.b.test");
    sent.emplace_back(enqueue({"rcpt@" + domain}), "rcpt@" + domain);
  }
  for (const auto& [id, recipient] : sent) {
    auto record = wait_for_attempts(id, recipient);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->status, RecipientStatus::deferred);
  }
  EXPECT_EQ(mx_host(0).most_concurrent_connections(), 2u);
}

TEST_F(DeliveryTest, ASlowDomainDoesNotHoldUpAnother) {
  // The per-domain limit is per domain: while b.test's only allowed session
  // hangs, c.test's mail (to the same host) goes.
  dns_.add_mx("b.test", 10, "mx1.b.test");
  dns_.add_mx("c.test", 10, "mx1.b.test");
  auto host = mx("mx1.b.test", "127.0.0.21");
  host.rules.push_back({.command = "RCPT", .argument = "@b.test>", .then = Then::hang, .times = 1});
  start_mx({host});
  auto settings = default_settings();
  settings.max_connections_per_domain = 1;
  settings.client.command_timeout = 2s;
  start_engine(settings);

  const std::string slow = enqueue({"rcpt@b.test"});
  ASSERT_TRUE(run_until([&] { return saw_mail(mx_host(0)); }));
  const std::string fast = enqueue({"rcpt@c.test"});
  ASSERT_TRUE(wait_for_messages(mx_host(0), 1));
  ASSERT_TRUE(run_until([&] { return !logged("sent", {"queue_id=" + fast}).empty(); }));
  EXPECT_FALSE(message(fast));
  EXPECT_EQ(engine_->attempts_in_flight(), 1u) << "b.test's attempt still waits for its RCPT";
  EXPECT_EQ(mx_host(0).most_concurrent_connections(), 2u);

  auto record = wait_for_attempts(slow, "rcpt@b.test");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, RecipientStatus::deferred);
}

}  // namespace
}  // namespace stsrelay::relay
