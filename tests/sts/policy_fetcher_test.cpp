#include "sts/policy_fetcher.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "tests/support/fake_https_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"

namespace stsrelay::sts {
namespace {

using testing::FakeHttpsRequest;
using testing::FakeHttpsResponse;
using testing::FakeHttpsServer;
using testing::TestCa;

const std::string policy_text =
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
    "max_age: 86400\r\n";

// Answers address lookups from a table; every other name does not exist.
// A lookup of a name mapped to `stall` waits until cancel().
class FakeResolver final : public dns::Resolver {
 public:
  explicit FakeResolver(asio::any_io_executor executor) : stall_(executor) {
    stall_.expires_at(asio::steady_timer::time_point::max());
  }

  std::map<std::string, std::vector<std::string>> addresses_of;
  std::string stalled_name;
  std::vector<std::string> asked;

  asio::awaitable<dns::MxAnswer> mx(std::string) override {
    co_return dns::MxAnswer{dns::Status::no_such_name, {}, false, "fake"};
  }
  asio::awaitable<dns::AddressAnswer> addresses(std::string host) override {
    asked.push_back(host);
    if (host == stalled_name) {
      co_await stall_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      co_return dns::AddressAnswer{dns::Status::cancelled, {}, "cancelled"};
    }
    auto found = addresses_of.find(host);
    if (found == addresses_of.end()) {
      co_return dns::AddressAnswer{dns::Status::no_such_name, {}, "no such name"};
    }
    dns::AddressAnswer answer;
    for (const auto& address : found->second) {
      answer.addresses.push_back(asio::ip::make_address(address));
    }
    co_return answer;
  }
  asio::awaitable<dns::TxtAnswer> txt(std::string) override {
    co_return dns::TxtAnswer{dns::Status::no_such_name, {}, "fake"};
  }
  void cancel() override { stall_.cancel(); }

 private:
  asio::steady_timer stall_;
};

// A port on `address` where nothing listens.
std::uint16_t closed_port(const std::string& address) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address(address), 0});
  return acceptor.local_endpoint().port();
}

class PolicyFetcherTest : public ::testing::Test {
 protected:
  PolicyFetcherTest() : ca_(temp_.path() / "ca") {
    auto context = tls::make_client_context(ca_.ca_file().string());
    EXPECT_TRUE(context) << context.error();
    tls_context_ = *context;
  }

  TestCa::Leaf leaf(const std::string& name, std::chrono::hours not_after = std::chrono::hours(24),
                    std::chrono::hours not_before = std::chrono::hours(-1)) {
    return ca_.issue(name, {{name}, not_before, not_after});
  }

  std::unique_ptr<FakeHttpsServer> serve(FakeHttpsResponse response,
                                         const std::string& address = "127.0.0.1") {
    auto cert = leaf("mta-sts.example.com");
    return std::make_unique<FakeHttpsServer>(
        FakeHttpsServer::Options{address, 0, cert.cert_file, cert.key_file, false},
        std::move(response));
  }

  tl::expected<std::string, FetchError> fetch(std::uint16_t port,
                                              std::string domain = "example.com",
                                              const std::string& address = "127.0.0.1") {
    asio::io_context io;
    FakeResolver resolver(io.get_executor());
    resolver.addresses_of["mta-sts.example.com"] = {address};
    return fetch_with(io, resolver, port, std::move(domain));
  }

  tl::expected<std::string, FetchError> fetch_with(asio::io_context& io, FakeResolver& resolver,
                                                   std::uint16_t port, std::string domain) {
    options_.port = port;
    auto fetcher = make_https_policy_fetcher(io.get_executor(), resolver, tls_context_, options_);
    std::optional<tl::expected<std::string, FetchError>> result;
    asio::co_spawn(io, fetcher->fetch(std::move(domain)),
                   [&](std::exception_ptr failure, tl::expected<std::string, FetchError> outcome) {
                     if (failure) {
                       std::rethrow_exception(failure);
                     }
                     result = std::move(outcome);
                     resolver.cancel();  // lets a stalled lookup end so io.run() returns
                   });
    io.run();
    EXPECT_TRUE(result.has_value());
    return result.value_or(tl::unexpected(FetchError{FetchErrorKind::fetch_error, "none", ""}));
  }

  static void expect_failure(const tl::expected<std::string, FetchError>& result,
                             FetchErrorKind kind, const std::string& reason) {
    ASSERT_FALSE(result) << "fetched: " << *result;
    EXPECT_EQ(result.error().kind, kind) << result.error().detail;
    EXPECT_EQ(result.error().reason, reason) << result.error().detail;
    EXPECT_FALSE(result.error().detail.empty());
  }

  testing::TempDir temp_;
  TestCa ca_;
  std::shared_ptr<asio::ssl::context> tls_context_;
  FetchOptions options_{443, std::chrono::milliseconds(10000), 65536};
};

TEST_F(PolicyFetcherTest, FetchesThePolicyByteExact) {
  auto server = serve(FakeHttpsResponse::policy(policy_text), "127.0.0.7");
  auto result = fetch(server->port(), "example.com", "127.0.0.7");
  ASSERT_TRUE(result) << result.error().reason << ": " << result.error().detail;
  EXPECT_EQ(*result, policy_text);

  auto requests = server->requests();
  ASSERT_EQ(requests.size(), 1u);
  const FakeHttpsRequest& request = requests.front();
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/.well-known/mta-sts.txt");
  EXPECT_EQ(request.version, "HTTP/1.1");
  EXPECT_EQ(request.server_name, "mta-sts.example.com");
  EXPECT_EQ(request.header("Host"), "mta-sts.example.com:" + std::to_string(server->port()));
  EXPECT_EQ(request.header("Connection"), "close");
  EXPECT_TRUE(request.header("User-Agent").has_value());
  EXPECT_TRUE(request.tls_version == "TLSv1.3" || request.tls_version == "TLSv1.2")
      << request.tls_version;
}

TEST_F(PolicyFetcherTest, TrailingDotAndCaseInTheDomainAreNormalised) {
  auto server = serve(FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server->port(), "Example.COM.");
  ASSERT_TRUE(result) << result.error().detail;
  EXPECT_EQ(server->requests().at(0).server_name, "mta-sts.example.com");
}

TEST_F(PolicyFetcherTest, ChunkedBodyWithExtensionsAndTrailers) {
  FakeHttpsResponse response = FakeHttpsResponse::policy(policy_text);
  response.framing = FakeHttpsResponse::Framing::chunked;
  response.chunk_size = 7;
  response.chunk_extension = ";note=\"x\"";
  response.trailer = "X-Trailer: done";
  auto server = serve(response);
  auto result = fetch(server->port());
  ASSERT_TRUE(result) << result.error().detail;
  EXPECT_EQ(*result, policy_text);
}

TEST_F(PolicyFetcherTest, BodyDelimitedByCloseIsAccepted) {
  FakeHttpsResponse response = FakeHttpsResponse::policy(policy_text);
  response.framing = FakeHttpsResponse::Framing::close;
  auto server = serve(response);
  auto result = fetch(server->port());
  ASSERT_TRUE(result) << result.error().detail;
  EXPECT_EQ(*result, policy_text);
}

TEST_F(PolicyFetcherTest, TextPlainWithParametersIsAccepted) {
  FakeHttpsResponse response = FakeHttpsResponse::policy(policy_text);
  response.headers = {{"Content-Type", "Text/Plain; charset=utf-8"}};
  auto server = serve(response);
  auto result = fetch(server->port());
  ASSERT_TRUE(result) << result.error().detail;
  EXPECT_EQ(*result, policy_text);
}

TEST_F(PolicyFetcherTest, TriesEachAddressInTurn) {
  auto server = serve(FakeHttpsResponse::policy(policy_text), "127.0.0.9");
  asio::io_context io;
  FakeResolver resolver(io.get_executor());
  // Nothing listens on the server's port at 127.0.0.8.
  resolver.addresses_of["mta-sts.example.com"] = {"127.0.0.8", "127.0.0.9"};
  auto result = fetch_with(io, resolver, server->port(), "example.com");
  ASSERT_TRUE(result) << result.error().detail;
  EXPECT_EQ(*result, policy_text);
  EXPECT_EQ(resolver.asked, std::vector<std::string>{"mta-sts.example.com"});
}

struct RejectedResponse {
  const char* name;
  FakeHttpsResponse response;
  const char* reason;
  const char* detail_mentions;
};

class PolicyFetcherRejects : public PolicyFetcherTest,
                             public ::testing::WithParamInterface<RejectedResponse> {};

TEST_P(PolicyFetcherRejects, Response) {
  auto server = serve(GetParam().response);
  auto result = fetch(server->port());
  expect_failure(result, FetchErrorKind::fetch_error, GetParam().reason);
  if (!result) {
    EXPECT_NE(result.error().detail.find(GetParam().detail_mentions), std::string::npos)
        << result.error().detail;
  }
}

FakeHttpsResponse with(int status, std::vector<std::pair<std::string, std::string>> headers,
                       std::string body) {
  FakeHttpsResponse response;
  response.status = status;
  response.headers = std::move(headers);
  response.body = std::move(body);
  return response;
}

FakeHttpsResponse raw(std::string bytes) {
  FakeHttpsResponse response;
  response.raw = std::move(bytes);
  return response;
}

FakeHttpsResponse oversize(FakeHttpsResponse::Framing framing) {
  FakeHttpsResponse response = FakeHttpsResponse::policy(std::string(200 * 1024, 'a'));
  response.framing = framing;
  response.chunk_size = 4096;
  return response;
}

INSTANTIATE_TEST_SUITE_P(
    Table, PolicyFetcherRejects,
    ::testing::Values(
        RejectedResponse{"redirect_301",
                         FakeHttpsResponse::redirect(301, "https://elsewhere.example/policy"),
                         "redirect", "https://elsewhere.example/policy"},
        RejectedResponse{"redirect_307", FakeHttpsResponse::redirect(307, "/other"), "redirect",
                         "307"},
        RejectedResponse{"not_found", with(404, {{"Content-Type", "text/plain"}}, "gone"),
                         "http-status", "404"},
        RejectedResponse{"server_error", with(500, {{"Content-Type", "text/plain"}}, ""),
                         "http-status", "500"},
        RejectedResponse{"html", with(200, {{"Content-Type", "text/html"}}, policy_text),
                         "content-type", "text/html"},
        RejectedResponse{"no_content_type", with(200, {}, policy_text), "content-type",
                         "without Content-Type"},
        RejectedResponse{"text_plainish", with(200, {{"Content-Type", "text/plainx"}}, policy_text),
                         "content-type", "text/plainx"},
        RejectedResponse{"oversize_by_length", oversize(FakeHttpsResponse::Framing::content_length),
                         "too-large", "65536"},
        RejectedResponse{"oversize_chunked", oversize(FakeHttpsResponse::Framing::chunked),
                         "too-large", "65536"},
        RejectedResponse{"oversize_until_close", oversize(FakeHttpsResponse::Framing::close),
                         "too-large", "65536"},
        RejectedResponse{"malformed",
                         raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
                         "http", "Content-Length"},
        RejectedResponse{"truncated",
                         raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 200\r\n\r\nversion: STSv1\r\n"),
                         "http", "closed"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(PolicyFetcherTest, RedirectIsNotFollowed) {
  auto server = serve(FakeHttpsResponse::redirect(301, "https://mta-sts.example.com/moved"));
  auto result = fetch(server->port());
  expect_failure(result, FetchErrorKind::fetch_error, "redirect");
  EXPECT_EQ(server->requests().size(), 1u);
}

TEST_F(PolicyFetcherTest, SlowServerHitsTheTimeout) {
  FakeHttpsResponse response = FakeHttpsResponse::policy(policy_text);
  response.delay = std::chrono::seconds(30);
  auto server = serve(response);
  options_.timeout = std::chrono::milliseconds(300);
  auto result = fetch(server->port());
  expect_failure(result, FetchErrorKind::fetch_error, "timeout");
}

TEST_F(PolicyFetcherTest, StalledDnsHitsTheTimeout) {
  asio::io_context io;
  FakeResolver resolver(io.get_executor());
  resolver.stalled_name = "mta-sts.example.com";
  options_.timeout = std::chrono::milliseconds(200);
  auto result = fetch_with(io, resolver, 443, "example.com");
  expect_failure(result, FetchErrorKind::fetch_error, "timeout");
}

TEST_F(PolicyFetcherTest, UntrustedCa) {
  TestCa other_ca(temp_.path() / "other-ca", "someone else's CA");
  auto cert = other_ca.issue("mta-sts.example.com", {{"mta-sts.example.com"}});
  FakeHttpsServer server({"127.0.0.1", 0, cert.cert_file, cert.key_file, false},
                         FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server.port());
  expect_failure(result, FetchErrorKind::webpki_invalid, "certificate-not-trusted");
  if (!result) {
    EXPECT_NE(result.error().detail.find("someone else's CA"), std::string::npos)
        << result.error().detail;
  }
  EXPECT_TRUE(server.requests().empty()) << "no request goes to an unverified host";
}

TEST_F(PolicyFetcherTest, WrongCertificateName) {
  auto cert = ca_.issue("wrong", {{"www.example.com", "example.com"}});
  FakeHttpsServer server({"127.0.0.1", 0, cert.cert_file, cert.key_file, false},
                         FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server.port());
  expect_failure(result, FetchErrorKind::webpki_invalid, "certificate-host-mismatch");
  if (!result) {
    EXPECT_EQ(result.error().detail,
              "certificate names www.example.com, example.com, not mta-sts.example.com");
  }
}

TEST_F(PolicyFetcherTest, ExpiredCertificate) {
  auto cert = leaf("mta-sts.example.com", std::chrono::hours(-24), std::chrono::hours(-48));
  FakeHttpsServer server({"127.0.0.1", 0, cert.cert_file, cert.key_file, false},
                         FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server.port());
  expect_failure(result, FetchErrorKind::webpki_invalid, "certificate-expired");
  if (!result) {
    EXPECT_NE(result.error().detail.find("certificate for mta-sts.example.com expired 20"),
              std::string::npos)
        << result.error().detail;
  }
}

TEST_F(PolicyFetcherTest, Tls11OnlyServerIsRefused) {
  auto cert = leaf("mta-sts.example.com");
  FakeHttpsServer server({"127.0.0.1", 0, cert.cert_file, cert.key_file, true},
                         FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server.port());
  expect_failure(result, FetchErrorKind::fetch_error, "tls");
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(PolicyFetcherTest, PlainHttpServerIsRefused) {
  FakeHttpsServer server({"127.0.0.1", 0, {}, {}, false}, FakeHttpsResponse::policy(policy_text));
  auto result = fetch(server.port());
  expect_failure(result, FetchErrorKind::fetch_error, "tls");
}

TEST_F(PolicyFetcherTest, ConnectionRefused) {
  auto result = fetch(closed_port("127.0.0.1"));
  expect_failure(result, FetchErrorKind::fetch_error, "connect");
  if (!result) {
    EXPECT_NE(result.error().detail.find("127.0.0.1"), std::string::npos) << result.error().detail;
  }
}

TEST_F(PolicyFetcherTest, NameDoesNotResolve) {
  auto result = fetch(443, "nowhere.example");
  expect_failure(result, FetchErrorKind::fetch_error, "dns");
  if (!result) {
    EXPECT_NE(result.error().detail.find("mta-sts.nowhere.example"), std::string::npos)
        << result.error().detail;
  }
}

TEST(PolicyFetchErrorKind, NamesRfc8460ResultTypes) {
  EXPECT_EQ(rfc8460_result_type(FetchErrorKind::fetch_error), "sts-policy-fetch-error");
  EXPECT_EQ(rfc8460_result_type(FetchErrorKind::webpki_invalid), "sts-webpki-invalid");
}

}  // namespace
}  // namespace stsrelay::sts
