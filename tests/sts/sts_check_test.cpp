#include "relay/sts_check.hpp"

#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/fake_dns_server.hpp"
#include "tests/support/fake_https_server.hpp"
#include "tests/support/fake_smtp_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"

// `stsrelay sts-check` end to end, in process: the real c-ares resolver
// against a fake DNS server, the real HTTPS policy fetch against a fake
// policy host, and real STARTTLS probes against fake MX hosts, all with
// certificates from a test CA.
namespace stsrelay::relay {
namespace {

using testing::FakeDnsServer;
using testing::FakeHttpsResponse;
using testing::FakeHttpsServer;
using testing::FakeSmtpServer;
using testing::FakeTlsVersion;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::TestCa;

const std::string domain = "example.test";
const std::string policy_host = "mta-sts.example.test";
const std::string policy_address = "127.0.0.2";
struct MxSpec {
  std::string name;
  std::string address;
};
const MxSpec mx1{"mx1.example.test", "127.0.0.3"};
const MxSpec mx2{"mx2.example.test", "127.0.0.4"};

std::string policy_text(std::string_view mode, std::vector<std::string> mx) {
  std::string text = "version: STSv1\r\nmode: " + std::string(mode) + "\r\n";
  for (const auto& pattern : mx) {
    text += "mx: " + pattern + "\r\n";
  }
  return text + "max_age: 86400\r\n";
}

std::string problems_of(const StsCheckReport& report) {
  std::string all;
  for (const auto& problem : report.problems) {
    all += problem + "\n";
  }
  return all;
}

class StsCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dns.add_txt("_mta-sts." + domain, {"v=STSv1; id=20240101"});
    dns.add_a(policy_host, policy_address);
    dns.add_mx(domain, 10, mx1.name);
    dns.add_mx(domain, 20, mx2.name);
    dns.add_a(mx1.name, mx1.address);
    dns.add_a(mx2.name, mx2.address);
    serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name})));
    start_mx({good_mx(mx1), good_mx(mx2)});
  }

  TestCa::Leaf leaf(const std::string& name,
                    std::chrono::seconds not_after = std::chrono::hours(24),
                    TestCa* issuer = nullptr) {
    TestCa::LeafOptions options;
    options.dns_names = {name};
    options.not_after_offset = not_after;
    if (not_after.count() < 0) {
      options.not_before_offset = not_after - std::chrono::hours(24);
    }
    return (issuer == nullptr ? ca : *issuer)
        .issue(name + "-" + std::to_string(++leaves_), options);
  }

  void serve_policy(FakeHttpsResponse response, std::optional<TestCa::Leaf> certificate = {}) {
    TestCa::Leaf chain = certificate ? *certificate : leaf(policy_host);
    policy_server.reset();
    policy_server = std::make_unique<FakeHttpsServer>(
        FakeHttpsServer::Options{
            .address = policy_address, .cert_file = chain.cert_file, .key_file = chain.key_file},
        std::move(response));
  }

  FakeSmtpServer::Options good_mx(const MxSpec& mx) { return mx_with(mx, leaf(mx.name)); }

  FakeSmtpServer::Options mx_with(const MxSpec& mx, const TestCa::Leaf& certificate) {
    FakeSmtpServer::Options options;
    options.address = mx.address;
    options.hostname = mx.name;
    options.starttls = true;
    options.cert_file = certificate.cert_file;
    options.key_file = certificate.key_file;
    return options;
  }

  void start_mx(std::vector<FakeSmtpServer::Options> options) {
    mx_servers.clear();
    mx_servers = testing::make_fake_smtp_servers(std::move(options));
  }

  std::uint16_t mx_port() const { return mx_servers.front()->port(); }

  StsCheckReport check(bool connect = true, std::string checked = domain) {
    asio::io_context io(1);
    auto resolver = dns::make_ares_resolver(io.get_executor(),
                                            {{dns.endpoint()}, std::chrono::milliseconds(3000)});
    if (!resolver) {
      ADD_FAILURE() << resolver.error();
      return {};
    }
    auto context = tls::make_client_context(ca.ca_file().string());
    if (!context) {
      ADD_FAILURE() << context.error();
      return {};
    }
    sts::FetchOptions fetch_options;
    fetch_options.port = policy_server->port();
    fetch_options.timeout = std::chrono::seconds(10);
    fetch_options.max_size = 65536;
    auto fetcher =
        sts::make_https_policy_fetcher(io.get_executor(), **resolver, *context, fetch_options);
    StsCheckTools tools{**resolver, *fetcher, *context, mx_port(), "relay.test", smtp_timeout};
    std::optional<StsCheckReport> report;
    asio::co_spawn(io, check_domain(checked, tools, connect),
                   [&](std::exception_ptr error, StsCheckReport result) {
                     if (error) {
                       std::rethrow_exception(error);
                     }
                     report = std::move(result);
                   });
    io.run();
    if (!report) {
      ADD_FAILURE() << "check_domain did not complete";
      return {};
    }
    return *report;
  }

  Config config() const {
    Config config;
    config.hostname = "relay.test";
    config.dns.servers = {Endpoint::parse(dns.server_string()).value()};
    config.dns.timeout = std::chrono::seconds(3);
    config.sts.policy_port = policy_server->port();
    config.sts.fetch_timeout = std::chrono::seconds(10);
    config.delivery.ca_file = ca.ca_file().string();
    config.delivery.port = mx_port();
    config.delivery.connect_timeout = std::chrono::seconds(10);
    return config;
  }

  TempDir dir;
  TestCa ca{dir.path() / "ca"};
  FakeDnsServer dns;
  std::unique_ptr<FakeHttpsServer> policy_server;
  std::vector<std::unique_ptr<FakeSmtpServer>> mx_servers;
  std::chrono::milliseconds smtp_timeout{10000};

 private:
  int leaves_ = 0;
};

void expect_one_problem_containing(const StsCheckReport& report, const std::string& text) {
  EXPECT_FALSE(report.valid);
  EXPECT_THAT(problems_of(report), HasSubstr(text));
}

// ---- valid setups ----

TEST_F(StsCheckTest, ValidEnforceSetup) {
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  EXPECT_TRUE(report.problems.empty());
  EXPECT_EQ(report.domain, domain);
  EXPECT_TRUE(report.txt.found);
  EXPECT_EQ(report.txt.id, "20240101");
  EXPECT_EQ(report.txt.error, std::nullopt);
  EXPECT_TRUE(report.policy.fetched);
  ASSERT_TRUE(report.policy.policy);
  EXPECT_EQ(report.policy.policy->mode, sts::Mode::enforce);
  EXPECT_EQ(report.policy.policy->max_age, std::chrono::seconds(86400));
  EXPECT_EQ(report.policy.policy->mx, (std::vector<std::string>{mx1.name, mx2.name}));
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& host = report.mx_hosts[i];
    EXPECT_EQ(host.name, i == 0 ? mx1.name : mx2.name);
    EXPECT_EQ(host.preference, i == 0 ? 10 : 20);
    EXPECT_FALSE(host.implicit);
    EXPECT_TRUE(host.matches_policy);
    EXPECT_EQ(host.starttls, true);
    EXPECT_EQ(host.tls_version, "TLSv1.3");
    EXPECT_EQ(host.certificate_valid, true);
    EXPECT_EQ(host.error, std::nullopt);
  }
  // Each MX was probed once, over TLS with SNI, and left with QUIT.
  for (std::size_t i = 0; i < 2; ++i) {
    auto sessions = mx_servers[i]->sessions();
    ASSERT_EQ(sessions.size(), 1u);
    EXPECT_TRUE(sessions[0].tls);
    EXPECT_EQ(sessions[0].server_name, i == 0 ? mx1.name : mx2.name);
    EXPECT_EQ(sessions[0].ehlo_name, "relay.test");
    EXPECT_TRUE(sessions[0].quit);
  }
  // The policy was asked for as RFC 8461 §3.3 says.
  auto requests = policy_server->requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].server_name, policy_host);
  EXPECT_EQ(requests[0].target, "/.well-known/mta-sts.txt");
}

TEST_F(StsCheckTest, ValidWithAWildcardPatternAndTls12Hosts) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {"*.example.test"})));
  auto first = good_mx(mx1);
  first.tls_max = FakeTlsVersion::tls1_2;
  start_mx({first, good_mx(mx2)});
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  EXPECT_EQ(report.mx_hosts[0].tls_version, "TLSv1.2");
}

TEST_F(StsCheckTest, ValidTestingSetup) {
  serve_policy(FakeHttpsResponse::policy(policy_text("testing", {mx1.name, mx2.name})));
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  ASSERT_TRUE(report.policy.policy);
  EXPECT_EQ(report.policy.policy->mode, sts::Mode::testing);
}

TEST_F(StsCheckTest, TestingModeStillNamesEveryProblem) {
  serve_policy(FakeHttpsResponse::policy(policy_text("testing", {mx1.name})));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx2.example.test does not match any mx pattern");
}

TEST_F(StsCheckTest, ModeNoneIsValidWhateverTheMxHosts) {
  // §8.3: a none policy is how a domain withdraws; senders check no host.
  serve_policy(FakeHttpsResponse::policy("version: STSv1\nmode: none\nmax_age: 86400\n"));
  start_mx({mx_with(mx1, leaf("wrong.example.test")), good_mx(mx2)});
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  ASSERT_TRUE(report.policy.policy);
  EXPECT_EQ(report.policy.policy->mode, sts::Mode::none);
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  EXPECT_FALSE(report.mx_hosts[0].matches_policy);
  EXPECT_EQ(report.mx_hosts[0].certificate_valid, false);
}

// ---- the TXT record ----

TEST_F(StsCheckTest, NoTxtRecord) {
  dns.remove_name("_mta-sts." + domain);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "no TXT record at _mta-sts.example.test");
  EXPECT_FALSE(report.txt.found);
  EXPECT_EQ(report.txt.id, std::nullopt);
  // The policy is still looked at: the owner wants to know about both halves.
  EXPECT_TRUE(report.policy.fetched);
  EXPECT_EQ(report.problems.size(), 1u) << problems_of(report);
}

TEST_F(StsCheckTest, OnlyUnrelatedTxtRecords) {
  dns.remove_name("_mta-sts." + domain);
  dns.add_txt("_mta-sts." + domain, {"v=spf1 -all"});
  const StsCheckReport report = check();
  EXPECT_FALSE(report.valid);
  EXPECT_FALSE(report.txt.found);
  EXPECT_THAT(report.txt.error.value_or(""), HasSubstr("does not begin with \"v=STSv1\""));
}

TEST_F(StsCheckTest, TwoStsTxtRecords) {
  dns.add_txt("_mta-sts." + domain, {"v=STSv1; id=20240202"});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "2 TXT records begin with \"v=STSv1\"");
  EXPECT_TRUE(report.txt.found);
  EXPECT_EQ(report.txt.id, std::nullopt);
}

TEST_F(StsCheckTest, InvalidId) {
  dns.remove_name("_mta-sts." + domain);
  dns.add_txt("_mta-sts." + domain, {"v=STSv1; id=2024-01-01"});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "id \"2024-01-01\" is not 1 to 32 letters and digits");
  EXPECT_TRUE(report.txt.found);
  EXPECT_EQ(report.txt.id, std::nullopt);
}

TEST_F(StsCheckTest, TxtLookupServerFailure) {
  dns.set_rcode("_mta-sts." + domain, testing::DnsRcode::servfail);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "_mta-sts.example.test");
  EXPECT_THAT(report.txt.error.value_or(""), HasSubstr("SERVFAIL"));
}

// ---- the policy ----

TEST_F(StsCheckTest, Policy404) {
  FakeHttpsResponse response;
  response.status = 404;
  response.headers = {{"Content-Type", "text/html"}};
  response.body = "<h1>not found</h1>";
  serve_policy(response);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "policy host answered HTTP 404 Not Found, not 200");
  EXPECT_FALSE(report.policy.fetched);
  EXPECT_EQ(report.policy.policy, std::nullopt);
}

TEST_F(StsCheckTest, PolicyServedAsHtml) {
  auto response = FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name}));
  response.headers = {{"Content-Type", "text/html; charset=utf-8"}};
  serve_policy(response);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "policy served with Content-Type text/html");
  EXPECT_FALSE(report.policy.fetched);
}

TEST_F(StsCheckTest, PolicyRedirect) {
  serve_policy(FakeHttpsResponse::redirect(301, "https://www.example.test/mta-sts.txt"));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "redirects are not followed");
  EXPECT_THAT(problems_of(report), HasSubstr("301"));
}

TEST_F(StsCheckTest, PolicyTooLarge) {
  std::string text = policy_text("enforce", {mx1.name, mx2.name});
  text += "comment: " + std::string(70000, 'x') + "\r\n";
  serve_policy(FakeHttpsResponse::policy(text));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "is larger than 65536 bytes");
}

TEST_F(StsCheckTest, EnforcePolicyWithoutMx) {
  serve_policy(FakeHttpsResponse::policy("version: STSv1\nmode: enforce\nmax_age: 86400\n"));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "policy is invalid (mx-missing)");
  EXPECT_TRUE(report.policy.fetched);
  EXPECT_EQ(report.policy.policy, std::nullopt);
}

TEST_F(StsCheckTest, PolicyWithBadVersion) {
  serve_policy(
      FakeHttpsResponse::policy("version: STSv2\nmode: enforce\nmx: mx1.example.test\n"
                                "max_age: 86400\n"));
  expect_one_problem_containing(check(), "policy is invalid (version-invalid)");
}

TEST_F(StsCheckTest, PolicyCertificateExpired) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name})),
               leaf(policy_host, -std::chrono::hours(24)));
  const StsCheckReport report = check();
  EXPECT_FALSE(report.valid);
  EXPECT_THAT(
      report.policy.error.value_or(""),
      ::testing::MatchesRegex(".*mta-sts\\.example\\.test expired [0-9]{4}-[0-9]{2}-[0-9]{2}.*"));
  EXPECT_FALSE(report.policy.fetched);
}

TEST_F(StsCheckTest, PolicyCertificateForAnotherName) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name})),
               leaf("www.example.test"));
  const StsCheckReport report = check();
  expect_one_problem_containing(report,
                                "certificate names www.example.test, not mta-sts.example.test");
}

TEST_F(StsCheckTest, PolicyCertificateFromAnUntrustedCa) {
  TestCa other(dir.path() / "other-ca", "some other CA");
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name})),
               leaf(policy_host, std::chrono::hours(24), &other));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "not signed by a trusted CA");
}

TEST_F(StsCheckTest, PolicyHostWithoutAddress) {
  dns.remove_name(policy_host);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mta-sts.example.test");
  EXPECT_FALSE(report.policy.fetched);
}

// ---- the MX hosts ----

TEST_F(StsCheckTest, MxNotListedInThePolicy) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name})));
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx2.example.test does not match any mx pattern");
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  EXPECT_TRUE(report.mx_hosts[0].matches_policy);
  EXPECT_FALSE(report.mx_hosts[1].matches_policy);
  // The unlisted host is still probed: its TLS is fine.
  EXPECT_EQ(report.mx_hosts[1].certificate_valid, true);
  EXPECT_EQ(report.problems.size(), 1u) << problems_of(report);
}

TEST_F(StsCheckTest, MxWithoutStarttls) {
  auto plain = good_mx(mx2);
  plain.starttls = false;
  start_mx({good_mx(mx1), plain});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx2.example.test does not offer STARTTLS");
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  EXPECT_EQ(report.mx_hosts[1].starttls, false);
  EXPECT_EQ(report.mx_hosts[1].tls_version, std::nullopt);
  EXPECT_EQ(report.mx_hosts[1].certificate_valid, std::nullopt);
  EXPECT_EQ(report.mx_hosts[0].certificate_valid, true);
}

TEST_F(StsCheckTest, MxCertificateExpired) {
  start_mx({mx_with(mx1, leaf(mx1.name, -std::chrono::hours(24))), good_mx(mx2)});
  const StsCheckReport report = check();
  EXPECT_FALSE(report.valid);
  EXPECT_THAT(problems_of(report),
              ::testing::ContainsRegex(
                  "certificate for mx1\\.example\\.test expired [0-9]{4}-[0-9]{2}-[0-9]{2}"));
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  EXPECT_EQ(report.mx_hosts[0].starttls, true);
  EXPECT_EQ(report.mx_hosts[0].tls_version, "TLSv1.3");
  EXPECT_EQ(report.mx_hosts[0].certificate_valid, false);
  EXPECT_EQ(report.mx_hosts[1].certificate_valid, true);
}

TEST_F(StsCheckTest, MxCertificateForAnotherName) {
  start_mx({good_mx(mx1), mx_with(mx2, leaf("mail.example.test"))});
  const StsCheckReport report = check();
  expect_one_problem_containing(report,
                                "certificate names mail.example.test, not mx2.example.test");
  EXPECT_EQ(report.mx_hosts.at(1).certificate_valid, false);
}

TEST_F(StsCheckTest, MxCertificateFromAnUntrustedCa) {
  TestCa other(dir.path() / "other-ca", "some other CA");
  start_mx({mx_with(mx1, leaf(mx1.name, std::chrono::hours(24), &other)), good_mx(mx2)});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx1.example.test");
  EXPECT_THAT(problems_of(report), HasSubstr("not signed by a trusted CA"));
  EXPECT_EQ(report.mx_hosts.at(0).certificate_valid, false);
}

TEST_F(StsCheckTest, MxOfferingOnlyTls11) {
  auto old = good_mx(mx1);
  old.tls_min = FakeTlsVersion::tls1_1;
  old.tls_max = FakeTlsVersion::tls1_1;
  start_mx({old, good_mx(mx2)});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "TLS handshake with mx1.example.test failed");
  EXPECT_EQ(report.mx_hosts.at(0).starttls, true);
  EXPECT_EQ(report.mx_hosts.at(0).tls_version, std::nullopt);
  EXPECT_NE(report.mx_hosts.at(0).certificate_valid, true);
  EXPECT_FALSE(mx_servers[0]->sessions().at(0).tls);
}

TEST_F(StsCheckTest, MxRefusingConnections) {
  // mx2's address has nothing listening on the port.
  start_mx({good_mx(mx1)});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "cannot connect to mx2.example.test [127.0.0.4]");
  EXPECT_EQ(report.mx_hosts.at(1).starttls, std::nullopt);
}

TEST_F(StsCheckTest, MxWithoutAddress) {
  dns.remove_name(mx2.name);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "cannot resolve mx2.example.test");
}

TEST_F(StsCheckTest, MxRejectingEhlo) {
  auto grumpy = good_mx(mx2);
  grumpy.rules = {{.command = "CONNECT", .reply = "554 5.7.1 go away"}};
  start_mx({good_mx(mx1), grumpy});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx2.example.test");
  EXPECT_THAT(report.mx_hosts.at(1).error.value_or(""), HasSubstr("554"));
}

TEST_F(StsCheckTest, MxThatNeverAnswersEhlo) {
  auto silent = good_mx(mx2);
  silent.rules = {{.command = "EHLO", .then = testing::FakeSmtpRule::Then::hang}};
  start_mx({good_mx(mx1), silent});
  smtp_timeout = std::chrono::milliseconds(300);
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "mx2.example.test");
  EXPECT_THAT(report.mx_hosts.at(1).error.value_or(""), HasSubstr("timed out"));
  EXPECT_EQ(report.mx_hosts.at(0).certificate_valid, true);
}

TEST_F(StsCheckTest, SurvivesPlaintextInjectedAfterTheStarttlsReply) {
  auto injecting = good_mx(mx1);
  injecting.rules = {{.command = "STARTTLS", .reply = "220 2.0.0 go ahead\n250 2.0.0 injected"}};
  start_mx({injecting, good_mx(mx2)});
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  EXPECT_TRUE(mx_servers[0]->sessions().at(0).quit);
}

TEST_F(StsCheckTest, MultiLineGreetingAndPipelinedExtensions) {
  auto chatty = good_mx(mx1);
  chatty.rules = {{.command = "CONNECT", .reply = "220-mx1.example.test\n220-welcome\n220 ESMTP"}};
  chatty.extra_extensions = {"DSN", "CHUNKING", "AUTH PLAIN LOGIN"};
  chatty.size_limit = 10485760;
  start_mx({chatty, good_mx(mx2)});
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
}

TEST_F(StsCheckTest, ImplicitMxMatchingThePolicy) {
  dns.remove_records(domain, testing::DnsType::mx);
  dns.add_a(domain, mx1.address);
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {domain})));
  start_mx({mx_with(mx1, leaf(domain))});
  const StsCheckReport report = check();
  EXPECT_TRUE(report.valid) << problems_of(report);
  ASSERT_EQ(report.mx_hosts.size(), 1u);
  EXPECT_EQ(report.mx_hosts[0].name, domain);
  EXPECT_TRUE(report.mx_hosts[0].implicit);
  EXPECT_TRUE(report.mx_hosts[0].matches_policy);
  EXPECT_EQ(report.mx_hosts[0].certificate_valid, true);
}

TEST_F(StsCheckTest, ImplicitMxNotMatchingThePolicy) {
  dns.remove_records(domain, testing::DnsType::mx);
  dns.add_a(domain, mx1.address);
  start_mx({mx_with(mx1, leaf(domain))});
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "example.test (implicit MX) does not match any mx pattern");
}

TEST_F(StsCheckTest, NullMx) {
  dns.remove_records(domain, testing::DnsType::mx);
  dns.add_mx(domain, 0, ".");
  const StsCheckReport report = check();
  expect_one_problem_containing(report, "null MX");
  EXPECT_TRUE(report.mx_hosts.empty());
}

TEST_F(StsCheckTest, DomainThatDoesNotExist) {
  const StsCheckReport report = check(true, "nosuch.test");
  EXPECT_FALSE(report.valid);
  EXPECT_EQ(report.domain, "nosuch.test");
  EXPECT_THAT(problems_of(report), HasSubstr("no TXT record at _mta-sts.nosuch.test"));
  EXPECT_THAT(problems_of(report), HasSubstr("nosuch.test does not exist"));
  EXPECT_FALSE(report.policy.fetched);
  EXPECT_TRUE(report.mx_hosts.empty());
}

TEST_F(StsCheckTest, DomainNameIsNormalized) {
  const StsCheckReport report = check(true, "Example.TEST.");
  EXPECT_EQ(report.domain, domain);
  EXPECT_TRUE(report.valid) << problems_of(report);
}

// ---- --no-connect ----

TEST_F(StsCheckTest, NoConnectLeavesTlsUnknown) {
  // Broken TLS does not matter when nothing connects.
  start_mx({mx_with(mx1, leaf("wrong.example.test")), good_mx(mx2)});
  const StsCheckReport report = check(false);
  EXPECT_TRUE(report.valid) << problems_of(report);
  ASSERT_EQ(report.mx_hosts.size(), 2u);
  for (const auto& host : report.mx_hosts) {
    EXPECT_TRUE(host.matches_policy);
    EXPECT_EQ(host.starttls, std::nullopt);
    EXPECT_EQ(host.tls_version, std::nullopt);
    EXPECT_EQ(host.certificate_valid, std::nullopt);
    EXPECT_EQ(host.error, std::nullopt);
  }
  EXPECT_EQ(mx_servers[0]->connections(), 0u);
  EXPECT_EQ(mx_servers[1]->connections(), 0u);
}

TEST_F(StsCheckTest, NoConnectStillChecksTheMatching) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name})));
  const StsCheckReport report = check(false);
  expect_one_problem_containing(report, "mx2.example.test does not match any mx pattern");
}

TEST_F(StsCheckTest, NoConnectStillChecksThePolicy) {
  serve_policy(FakeHttpsResponse::redirect(302, "https://elsewhere.test/"));
  const StsCheckReport report = check(false);
  expect_one_problem_containing(report, "redirect");
}

// ---- output ----

TEST_F(StsCheckTest, JsonHasTheShapeOfSpec) {
  serve_policy(FakeHttpsResponse::policy(policy_text("enforce", {mx1.name})));
  const auto json = nlohmann::json::parse(render_json(check()));
  EXPECT_EQ(json.at("domain"), domain);
  EXPECT_EQ(json.at("valid"), false);

  const auto& txt = json.at("txt");
  EXPECT_EQ(txt.at("found"), true);
  EXPECT_EQ(txt.at("id"), "20240101");
  EXPECT_TRUE(txt.at("error").is_null());

  const auto& policy = json.at("policy");
  EXPECT_EQ(policy.at("fetched"), true);
  EXPECT_EQ(policy.at("mode"), "enforce");
  EXPECT_EQ(policy.at("max_age"), 86400);
  EXPECT_EQ(policy.at("mx"), nlohmann::json::array({mx1.name}));
  EXPECT_TRUE(policy.at("error").is_null());

  const auto& hosts = json.at("mx_hosts");
  ASSERT_TRUE(hosts.is_array());
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(hosts[0].at("name"), mx1.name);
  EXPECT_EQ(hosts[0].at("preference"), 10);
  EXPECT_EQ(hosts[0].at("matches_policy"), true);
  EXPECT_EQ(hosts[0].at("starttls"), true);
  EXPECT_EQ(hosts[0].at("tls_version"), "TLSv1.3");
  EXPECT_EQ(hosts[0].at("certificate_valid"), true);
  EXPECT_TRUE(hosts[0].at("error").is_null());
  EXPECT_EQ(hosts[1].at("name"), mx2.name);
  EXPECT_EQ(hosts[1].at("preference"), 20);
  EXPECT_EQ(hosts[1].at("matches_policy"), false);
}

TEST_F(StsCheckTest, JsonOfAFailedFetchAndNoConnect) {
  FakeHttpsResponse response;
  response.status = 404;
  serve_policy(response);
  const auto json = nlohmann::json::parse(render_json(check(false)));
  const auto& policy = json.at("policy");
  EXPECT_EQ(policy.at("fetched"), false);
  EXPECT_TRUE(policy.at("mode").is_null());
  EXPECT_TRUE(policy.at("max_age").is_null());
  EXPECT_EQ(policy.at("mx"), nlohmann::json::array());
  ASSERT_TRUE(policy.at("error").is_string());
  EXPECT_THAT(policy.at("error").get<std::string>(), HasSubstr("404"));
  for (const auto& host : json.at("mx_hosts")) {
    EXPECT_EQ(host.at("matches_policy"), false);
    EXPECT_TRUE(host.at("starttls").is_null());
    EXPECT_TRUE(host.at("tls_version").is_null());
    EXPECT_TRUE(host.at("certificate_valid").is_null());
  }
  EXPECT_EQ(json.at("valid"), false);
}

TEST_F(StsCheckTest, JsonOfAMissingTxtRecord) {
  dns.remove_name("_mta-sts." + domain);
  const auto json = nlohmann::json::parse(render_json(check(false)));
  EXPECT_EQ(json.at("txt").at("found"), false);
  EXPECT_TRUE(json.at("txt").at("id").is_null());
  EXPECT_THAT(json.at("txt").at("error").get<std::string>(), HasSubstr("no TXT record"));
}

TEST_F(StsCheckTest, TextNamesTheProblem) {
  start_mx({good_mx(mx1), mx_with(mx2, leaf(mx2.name, -std::chrono::hours(48)))});
  const std::string text = render_text(check());
  EXPECT_THAT(text, HasSubstr("MTA-STS check for example.test"));
  EXPECT_THAT(text, HasSubstr("id 20240101"));
  EXPECT_THAT(text, HasSubstr("mode enforce"));
  EXPECT_THAT(text, HasSubstr("NOT valid"));
  EXPECT_THAT(text, ::testing::ContainsRegex("certificate for mx2\\.example\\.test expired "));
}

TEST_F(StsCheckTest, TextOfAValidSetup) {
  const std::string text = render_text(check());
  EXPECT_THAT(text, HasSubstr("valid: "));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("NOT valid")));
  EXPECT_THAT(text,
              HasSubstr("MX 10 mx1.example.test: listed, STARTTLS TLSv1.3, certificate valid"));
}

// ---- the command: exit status and output ----

TEST_F(StsCheckTest, CommandExitsZeroForAValidSetup) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(sts_check(config(), domain, true, true, out, err), 0) << out.str() << err.str();
  EXPECT_EQ(nlohmann::json::parse(out.str()).at("valid"), true);
  EXPECT_EQ(err.str(), "");
}

TEST_F(StsCheckTest, CommandExitsOneForABrokenSetup) {
  auto response = FakeHttpsResponse::policy(policy_text("enforce", {mx1.name, mx2.name}));
  response.headers = {{"Content-Type", "text/html"}};
  serve_policy(response);
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(sts_check(config(), domain, false, true, out, err), 1);
  EXPECT_THAT(out.str(), HasSubstr("policy served with Content-Type text/html"));
}

TEST_F(StsCheckTest, CommandWithoutConnectingTouchesNoMx) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(sts_check(config(), domain, true, false, out, err), 0) << out.str() << err.str();
  EXPECT_EQ(mx_servers[0]->connections(), 0u);
  auto json = nlohmann::json::parse(out.str());
  EXPECT_TRUE(json.at("mx_hosts").at(0).at("starttls").is_null());
}

TEST_F(StsCheckTest, CommandWithAMissingCaFileIsAConfigurationError) {
  Config broken = config();
  broken.delivery.ca_file = (dir.path() / "missing.pem").string();
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(sts_check(broken, domain, false, true, out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("delivery.ca_file"));
}

// ---- judge() on its own ----

StsCheckReport report_with_policy(sts::Mode mode) {
  StsCheckReport report;
  report.domain = domain;
  report.txt.found = true;
  report.txt.id = "1";
  report.policy.fetched = true;
  report.policy.policy = sts::Policy{mode, std::chrono::seconds(86400), {mx1.name}};
  StsCheckReport::MxHost host;
  host.name = mx1.name;
  host.preference = 10;
  host.matches_policy = true;
  report.mx_hosts.push_back(host);
  return report;
}

TEST(StsCheckJudge, UnprobedHostsCountOnlyWithoutConnecting) {
  StsCheckReport report = report_with_policy(sts::Mode::enforce);
  judge(report, false);
  EXPECT_TRUE(report.valid);
  judge(report, true);
  EXPECT_FALSE(report.valid);
  EXPECT_THAT(problems_of(report), HasSubstr("mx1.example.test"));
}

TEST(StsCheckJudge, NoMxHostsAtAllIsNotValid) {
  StsCheckReport report = report_with_policy(sts::Mode::enforce);
  report.mx_hosts.clear();
  report.mx_error = "example.test publishes a null MX (RFC 7505): it accepts no mail";
  judge(report, false);
  EXPECT_FALSE(report.valid);
}

TEST(StsCheckJudge, ProblemsAreRecountedEachTime) {
  StsCheckReport report = report_with_policy(sts::Mode::enforce);
  report.mx_hosts[0].matches_policy = false;
  judge(report, false);
  judge(report, false);
  EXPECT_EQ(report.problems.size(), 1u);
}

}  // namespace
}  // namespace stsrelay::relay
