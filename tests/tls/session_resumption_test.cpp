#include "tls/session_resumption.hpp"

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>
#include <gtest/gtest.h>

#include "smtp/client.hpp"
#include "smtp/server.hpp"
#include "tests/support/fake_smtp_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"
#include "tls/server_context.hpp"

// Outbound SMTP connections resuming TLS sessions over loopback, with
// certificates from a test CA: what resumes, what must not, and the verdict
// a resumed connection reports.
namespace stsrelay::tls {
namespace {

using namespace std::chrono_literals;
using smtp::SmtpConnection;
using smtp::TlsRequirement;
using stsrelay::testing::FakeSmtpServer;
using stsrelay::testing::FakeTlsVersion;
using stsrelay::testing::TempDir;
using stsrelay::testing::TestCa;

using Opened = tl::expected<std::unique_ptr<SmtpConnection>, smtp::DeliveryStatus>;

asio::awaitable<void> quit_on(SmtpConnection* connection) {
  co_await connection->quit();
}

class SessionResumption : public ::testing::TestWithParam<FakeTlsVersion> {
 protected:
  SessionResumption() : ca_(dir_.path()) {
    auto context = make_client_context(ca_.ca_file().string());
    EXPECT_TRUE(context.has_value());
    context_ = *context;
  }

  // A fake MX speaking only the version under test, its certificate naming `names`.
  std::unique_ptr<FakeSmtpServer> server(std::vector<std::string> names) {
    auto leaf = ca_.issue("leaf" + std::to_string(++leaves_), {.dns_names = std::move(names)});
    FakeSmtpServer::Options options;
    options.hostname = "mx.b.test";
    options.starttls = true;
    options.cert_file = leaf.cert_file;
    options.key_file = leaf.key_file;
    options.tls_min = GetParam();
    options.tls_max = GetParam();
    return std::make_unique<FakeSmtpServer>(options);
  }

  template <typename T>
  T run(asio::awaitable<T> work) {
    auto future = asio::co_spawn(io_, std::move(work), asio::use_future);
    while (future.wait_for(0s) != std::future_status::ready) {
      io_.restart();
      io_.run_one();
    }
    return future.get();
  }

  // Opens a connection as `host`, takes its TLS outcome (or failure) and quits.
  Opened connect(const std::string& host, std::uint16_t port, TlsRequirement requirement) {
    smtp::ClientOptions options;
    options.helo_name = "relay.a.test";
    options.connect_timeout = 10s;
    options.command_timeout = 10s;
    options.tls_context = context_;
    auto opened = run(SmtpConnection::open(host, asio::ip::make_address("127.0.0.1"), port,
                                           requirement, std::move(options)));
    if (opened) {
      auto future = asio::co_spawn(io_, quit_on(opened->get()), asio::use_future);
      while (future.wait_for(0s) != std::future_status::ready) {
        io_.restart();
        io_.run_one();
      }
    }
    return opened;
  }
  Opened connect(const FakeSmtpServer& mx, TlsRequirement requirement,
                 const std::string& host = "mx.b.test") {
    return connect(host, mx.port(), requirement);
  }

  SessionCache& cache() { return *session_cache_of(context_->native_handle()); }

  TempDir dir_;
  TestCa ca_;
  int leaves_ = 0;
  std::shared_ptr<asio::ssl::context> context_;
  asio::io_context io_;
};

std::string version_name(FakeTlsVersion version) {
  return version == FakeTlsVersion::tls1_3 ? "TLSv1.3" : "TLSv1.2";
}

TEST_P(SessionResumption, ASecondConnectionResumesWithTheSameVerdict) {
  auto mx = server({"mx.b.test"});
  smtp::TlsOutcome first;
  {
    // Each connection is gone before the next opens, as in the relay.
    auto opened = connect(*mx, TlsRequirement::validated);
    ASSERT_TRUE(opened) << opened.error().diagnostic();
    first = (*opened)->tls();
  }
  EXPECT_TRUE(first.used);
  EXPECT_FALSE(first.resumed);
  EXPECT_EQ(first.certificate.verdict, CertificateVerdict::valid);

  for (int i = 0; i < 4; ++i) {
    auto next = connect(*mx, TlsRequirement::validated);
    ASSERT_TRUE(next) << next.error().diagnostic();
    const auto& tls = (*next)->tls();
    EXPECT_TRUE(tls.resumed) << "connection " << i + 2;
    EXPECT_EQ(tls.version, version_name(GetParam()));
    EXPECT_EQ(tls.version, first.version);
    EXPECT_EQ(tls.cipher, first.cipher);
    EXPECT_EQ(tls.certificate.verdict, CertificateVerdict::valid);
    EXPECT_EQ(tls.certificate.detail, first.certificate.detail);
  }
  EXPECT_EQ(mx->messages().size(), 0u);
  EXPECT_LE(cache().size(), cache().limits().max_per_key);
  for (const auto& session : mx->sessions()) {
    EXPECT_TRUE(session.tls);
  }
  // (An OpenSSL server reports no SNI on a resumed TLS 1.2 session.)
  EXPECT_EQ(mx->sessions().front().server_name, "mx.b.test");
}

TEST_P(SessionResumption, AnotherNameDoesNotResume) {
  auto mx = server({"mx.b.test", "mx2.b.test"});
  ASSERT_TRUE(connect(*mx, TlsRequirement::validated, "mx.b.test"));
  auto other = connect(*mx, TlsRequirement::validated, "mx2.b.test");
  ASSERT_TRUE(other) << other.error().diagnostic();
  EXPECT_FALSE((*other)->tls().resumed);
  EXPECT_EQ((*other)->tls().certificate.verdict, CertificateVerdict::valid);
  auto again = connect(*mx, TlsRequirement::validated, "mx.b.test");
  ASSERT_TRUE(again) << again.error().diagnostic();
  EXPECT_TRUE((*again)->tls().resumed);
}

TEST_P(SessionResumption, AStrongerRequirementDoesNotResumeAnOpportunisticSession) {
  auto mx = server({"mx.b.test"});
  auto opportunistic = connect(*mx, TlsRequirement::opportunistic);
  ASSERT_TRUE(opportunistic) << opportunistic.error().diagnostic();
  EXPECT_EQ((*opportunistic)->tls().certificate.verdict, CertificateVerdict::valid);
  auto validated = connect(*mx, TlsRequirement::validated);
  ASSERT_TRUE(validated) << validated.error().diagnostic();
  EXPECT_FALSE((*validated)->tls().resumed);
}

TEST_P(SessionResumption, AFailedVerdictIsInheritedAndNeverServesValidation) {
  auto mx = server({"other.b.test"});
  auto first = connect(*mx, TlsRequirement::opportunistic);
  ASSERT_TRUE(first) << first.error().diagnostic();
  EXPECT_TRUE((*first)->tls().used);
  EXPECT_EQ((*first)->tls().certificate.verdict, CertificateVerdict::host_mismatch);

  // Opportunistic again: resumed, and still a mismatch, although no
  // certificate check ran in this handshake.
  auto second = connect(*mx, TlsRequirement::opportunistic);
  ASSERT_TRUE(second) << second.error().diagnostic();
  EXPECT_TRUE((*second)->tls().resumed);
  EXPECT_EQ((*second)->tls().certificate.verdict, CertificateVerdict::host_mismatch);
  EXPECT_EQ((*second)->tls().certificate.detail, (*first)->tls().certificate.detail);

  // MTA-STS: a full handshake, which fails as it must.
  auto enforced = connect(*mx, TlsRequirement::validated);
  ASSERT_FALSE(enforced);
  EXPECT_EQ(enforced.error().tls_result, "certificate-host-mismatch");
  auto again = connect(*mx, TlsRequirement::validated);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().tls_result, "certificate-host-mismatch");
  EXPECT_EQ(cache().size({"mx.b.test", mx->port(), true}), 0u)
      << "a failed validation caches nothing";
}

TEST_P(SessionResumption, AnotherPortDoesNotResume) {
  auto mx = server({"mx.b.test"});
  auto other_mx = server({"mx.b.test"});
  ASSERT_TRUE(connect(*mx, TlsRequirement::validated));
  auto other = connect(*other_mx, TlsRequirement::validated);
  ASSERT_TRUE(other) << other.error().diagnostic();
  EXPECT_FALSE((*other)->tls().resumed);
}

INSTANTIATE_TEST_SUITE_P(Versions, SessionResumption,
                         ::testing::Values(FakeTlsVersion::tls1_2, FakeTlsVersion::tls1_3),
                         [](const auto& info) {
                           return info.param == FakeTlsVersion::tls1_3 ? "TLS13" : "TLS12";
                         });

// The relay's own SMTP server as the MX (as bench/tls_sink runs it): the
// server, too, sees resumed sessions, counted as the sink counts them.
class NullSink : public smtp::MessageSink {
 public:
  asio::awaitable<tl::expected<void, std::string>> store(smtp::ReceivedMessage) override {
    co_return tl::expected<void, std::string>{};
  }
};

class CountingObserver : public smtp::ServerObserver {
 public:
  void tls_established(std::string_view, const smtp::TlsDetails&) override { ++handshakes; }
  int handshakes = 0;
};

class SessionResumptionServerSide : public ::testing::TestWithParam<int> {};

TEST_P(SessionResumptionServerSide, TheServerCountsResumedHandshakes) {
  TempDir dir;
  TestCa ca(dir.path());
  auto leaf = ca.issue("mx", {.dns_names = {"mx.b.test"}});
  auto server_context = make_server_context(leaf.cert_file.string(), leaf.key_file.string());
  ASSERT_TRUE(server_context) << server_context.error();
  auto client_context = make_client_context(ca.ca_file().string());
  ASSERT_TRUE(client_context) << client_context.error();

  asio::io_context io;
  NullSink sink;
  CountingObserver observer;
  smtp::ServerOptions options;
  options.endpoints.emplace_back(asio::ip::make_address("127.0.0.1"), 0);
  options.session.hostname = "mx.b.test";
  options.session.new_message_id = [] { return std::string("ID"); };
  options.client_allowed = [](const asio::ip::address&) { return true; };
  options.tls = std::make_shared<asio::ssl::context>(std::move(*server_context));
  SSL_CTX* server_ssl = options.tls->native_handle();
  SSL_CTX_set_max_proto_version(server_ssl, GetParam());
  smtp::Server server(io.get_executor(), options, sink, observer);
  ASSERT_TRUE(server.listen());
  server.start();
  const auto port = server.local_endpoints().front().port();

  auto run = [&io](auto work) {
    auto future = asio::co_spawn(io, std::move(work), asio::use_future);
    while (future.wait_for(0s) != std::future_status::ready) {
      io.run_one();
    }
    return future.get();
  };
  std::vector<bool> resumed;
  for (int i = 0; i < 4; ++i) {
    smtp::ClientOptions client;
    client.helo_name = "relay.a.test";
    client.tls_context = *client_context;
    auto opened = run(SmtpConnection::open("mx.b.test", asio::ip::make_address("127.0.0.1"), port,
                                           TlsRequirement::validated, client));
    ASSERT_TRUE(opened) << opened.error().diagnostic();
    resumed.push_back((*opened)->tls().resumed);
    EXPECT_EQ((*opened)->tls().certificate.verdict, CertificateVerdict::valid);
    run(quit_on(opened->get()));
  }
  EXPECT_EQ(resumed, (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(observer.handshakes, 4);
  EXPECT_EQ(SSL_CTX_sess_hits(server_ssl), 3);
  server.stop();
  run(server.drained());
}

INSTANTIATE_TEST_SUITE_P(Versions, SessionResumptionServerSide,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION), [](const auto& info) {
                           return info.param == TLS1_3_VERSION ? "TLS13" : "TLS12";
                         });

}  // namespace
}  // namespace stsrelay::tls
