#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

#include "dns/resolver.hpp"

namespace stsrelay::sts {

// Why a policy could not be fetched, grouped as RFC 8460 reports them.
enum class FetchErrorKind {
  fetch_error,  // sts-policy-fetch-error: DNS, connection, HTTP status, redirect, media type, size,
                // timeout
  webpki_invalid  // sts-webpki-invalid: the HTTPS certificate did not validate for mta-sts.DOMAIN
};

struct FetchError {
  FetchErrorKind kind = FetchErrorKind::fetch_error;
  std::string reason;  // short and stable: "http-status", "content-type", "redirect", "too-large",
                       // "timeout", ...
  std::string detail;  // for people: "policy served with Content-Type text/html"
};

std::string_view rfc8460_result_type(FetchErrorKind kind);

struct FetchOptions {
  std::uint16_t port = 443;                  // sts.policy_port
  std::chrono::milliseconds timeout{60000};  // sts.fetch_timeout: the whole fetch
  std::size_t max_size = 65536;              // sts.max_policy_size: the body
};

// Fetches https://mta-sts.DOMAIN[:port]/.well-known/mta-sts.txt (RFC 8461 §3.3)
// and returns the body. Tests substitute fakes.
class PolicyFetcher {
 public:
  virtual ~PolicyFetcher() = default;
  virtual asio::awaitable<tl::expected<std::string, FetchError>> fetch(std::string domain) = 0;
};

// Over Asio + OpenSSL: mta-sts.DOMAIN resolved with `resolver`, its addresses
// tried in turn, SNI and certificate checked for mta-sts.DOMAIN against
// tls_context (see tls/client_context.hpp), HTTP/1.1 GET.
std::unique_ptr<PolicyFetcher> make_https_policy_fetcher(
    asio::any_io_executor executor, dns::Resolver& resolver,
    std::shared_ptr<asio::ssl::context> tls_context, FetchOptions options);

}  // namespace stsrelay::sts
