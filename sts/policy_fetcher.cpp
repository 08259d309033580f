#include "sts/policy_fetcher.hpp"

#include <array>
#include <exception>
#include <optional>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "sts/http_response.hpp"
#include "tls/peer_check.hpp"

namespace stsrelay::sts {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr std::size_t max_header_bytes = 16 * 1024;
constexpr std::string_view user_agent = "stsrelay/0.1 (MTA-STS policy fetch)";

using FetchResult = tl::expected<std::string, FetchError>;

FetchResult failure(std::string reason, std::string detail,
                    FetchErrorKind kind = FetchErrorKind::fetch_error) {
  return tl::unexpected(FetchError{kind, std::move(reason), std::move(detail)});
}

std::string describe(std::exception_ptr exception) {
  try {
    std::rethrow_exception(exception);
  } catch (const std::exception& caught) {
    return caught.what();
  } catch (...) {
    return "unknown exception";
  }
}

std::string dns_problem(dns::Status status) {
  switch (status) {
    case dns::Status::ok:
    case dns::Status::no_data:
      return "has no A or AAAA records";
    case dns::Status::no_such_name:
      return "does not exist (NXDOMAIN)";
    case dns::Status::server_failure:
      return "could not be resolved (DNS server failure)";
    case dns::Status::timeout:
      return "could not be resolved (DNS timeout)";
    case dns::Status::cancelled:
      return "was not resolved (lookup cancelled)";
  }
  return "could not be resolved";
}

std::string lowercase(std::string_view text) {
  std::string lowered(text);
  for (char& c : lowered) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return lowered;
}

// RFC 8461 §3.3: the policy is text/plain; parameters such as charset are
// allowed. The media type is case-insensitive (RFC 9110 §8.3.1).
bool is_text_plain(std::string_view content_type) {
  std::string_view media_type = content_type.substr(0, content_type.find(';'));
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  return lowercase(media_type) == "text/plain";
}

// One fetch in flight. It lives as long as its coroutine, which may outlast
// fetch() when the deadline passes during a DNS lookup that cannot be
// cancelled; everything it needs is therefore owned here, not borrowed
// from the fetcher.
struct Attempt {
  Attempt(asio::any_io_executor executor, dns::Resolver& resolver,
          std::shared_ptr<asio::ssl::context> context, FetchOptions options, std::string domain)
      : resolver(resolver),
        tls_context(std::move(context)),
        options(options),
        domain(std::move(domain)),
        host("mta-sts." + this->domain),
        socket(executor),
        deadline(executor) {}

  dns::Resolver& resolver;
  std::shared_ptr<asio::ssl::context> tls_context;
  FetchOptions options;
  std::string domain;
  std::string host;
  tcp::socket socket;
  asio::steady_timer deadline;  // also the signal that the attempt ended
  std::optional<FetchResult> result;
  bool abandoned = false;

  void finish(FetchResult outcome) {
    if (!result) {
      result = std::move(outcome);
    }
    deadline.cancel();
  }

  void abandon() {
    abandoned = true;
    std::error_code ignored;
    socket.close(ignored);
  }

  std::string where() const {
    return host + (options.port == 443 ? "" : ":" + std::to_string(options.port));
  }

  static asio::awaitable<void> run(std::shared_ptr<Attempt> self) {
    FetchResult outcome = co_await self->fetch();
    self->finish(std::move(outcome));
  }

  asio::awaitable<FetchResult> fetch() {
    dns::AddressAnswer answer = co_await resolver.addresses(host);
    if (abandoned) {
      co_return failure("timeout", "gave up while resolving " + host);
    }
    if (answer.status != dns::Status::ok || answer.addresses.empty()) {
      co_return failure("dns", host + " " + dns_problem(answer.status) +
                                   (answer.detail.empty() ? "" : ": " + answer.detail));
    }

    std::string connect_errors;
    bool connected = false;
    for (const auto& address : answer.addresses) {
      std::error_code ignored;
      socket.close(ignored);
      auto [error] = co_await socket.async_connect(tcp::endpoint(address, options.port), use_tuple);
      if (abandoned) {
        co_return failure("timeout", "gave up while connecting to " + where());
      }
      if (!error) {
        connected = true;
        break;
      }
      connect_errors +=
          (connect_errors.empty() ? "" : ", ") + address.to_string() + ": " + error.message();
    }
    if (!connected) {
      co_return failure("connect", "cannot connect to " + where() + " (" + connect_errors + ")");
    }

    asio::ssl::stream<tcp::socket&> stream(socket, *tls_context);
    if (!tls::prepare_client(stream.native_handle(), host)) {
      co_return failure("tls", "cannot set up TLS for " + host);
    }
    auto [handshake_error] =
        co_await stream.async_handshake(asio::ssl::stream_base::client, use_tuple);
    if (abandoned) {
      co_return failure("timeout", "gave up during the TLS handshake with " + where());
    }
    if (handshake_error) {
      co_return failure("tls",
                        "TLS handshake with " + where() + " failed: " + handshake_error.message());
    }
    tls::PeerCheck check = tls::verdict(stream.native_handle(), host);
    if (check.verdict != tls::CertificateVerdict::valid) {
      co_return failure(std::string(tls::rfc8460_result_type(check.verdict)), check.detail,
                        FetchErrorKind::webpki_invalid);
    }

    std::string request = "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: " + where() +
                          "\r\nUser-Agent: " + std::string(user_agent) +
                          "\r\nAccept: text/plain\r\nConnection: close\r\n\r\n";
    auto [write_error, written] =
        co_await asio::async_write(stream, asio::buffer(request), use_tuple);
    (void)written;
    if (abandoned) {
      co_return failure("timeout", "gave up while sending the request to " + where());
    }
    if (write_error) {
      co_return failure("connect",
                        "cannot send the request to " + where() + ": " + write_error.message());
    }
    FetchResult body = co_await read_response(stream);
    co_return body;
  }

  asio::awaitable<FetchResult> read_response(asio::ssl::stream<tcp::socket&>& stream) {
    HttpResponseParser parser(HttpLimits{max_header_bytes, options.max_size});
    // Reads are small so that a body over the cap is noticed within a few
    // KiB of it, not after buffering whatever the server sends.
    std::array<char, 4096> buffer;
    bool judged_headers = false;
    for (;;) {
      auto [error, length] = co_await stream.async_read_some(asio::buffer(buffer), use_tuple);
      if (abandoned) {
        co_return failure("timeout", "gave up while reading the policy from " + where());
      }
      HttpResponseParser::State state = parser.state();
      if (length > 0) {
        state = parser.feed(std::string_view(buffer.data(), length));
      }
      if (state == HttpResponseParser::State::need_more && error) {
        if (error == asio::ssl::error::stream_truncated && parser.body_until_close()) {
          // Without close_notify a body delimited by the connection's end
          // could have been cut short by anyone on the path.
          co_return failure("http", "policy body from " + where() +
                                        " ended without TLS close_notify; it may be truncated");
        }
        if (error == asio::error::eof || error == asio::ssl::error::stream_truncated) {
          state = parser.finish();
        } else {
          co_return failure("connect", "reading from " + where() + " failed: " + error.message());
        }
      }
      if (!judged_headers && parser.headers_complete()) {
        judged_headers = true;
        if (auto rejected = judge(parser.response())) {
          co_return std::move(*rejected);
        }
      }
      if (state == HttpResponseParser::State::failed) {
        if (parser.error() == HttpParseError::body_too_large) {
          co_return failure("too-large", "policy from " + where() + " is larger than " +
                                             std::to_string(options.max_size) + " bytes");
        }
        co_return failure("http",
                          "malformed HTTP response from " + where() + ": " + parser.error_detail());
      }
      if (state == HttpResponseParser::State::complete) {
        co_return parser.take_response().body;
      }
    }
  }

  // Status and media type are judged as soon as the headers are in, before
  // any body: a 404 page or an HTML body is rejected for what it is.
  std::optional<FetchResult> judge(const HttpResponse& response) const {
    if (response.status >= 300 && response.status < 400) {
      auto location = response.header("Location");
      return failure("redirect", "policy host answered " + std::to_string(response.status) +
                                     " redirect" +
                                     (location ? " to " + std::string(*location) : "") +
                                     "; redirects are not followed (RFC 8461 §3.3)");
    }
    if (response.status != 200) {
      return failure("http-status",
                     "policy host answered HTTP " + std::to_string(response.status) +
                         (response.reason_phrase.empty() ? "" : " " + response.reason_phrase) +
                         ", not 200");
    }
    auto content_type = response.header("Content-Type");
    if (!content_type) {
      return failure("content-type", "policy served without Content-Type; text/plain is required");
    }
    if (!is_text_plain(*content_type)) {
      return failure("content-type", "policy served with Content-Type " +
                                         std::string(*content_type) + ", not text/plain");
    }
    return std::nullopt;
  }
};

class HttpsPolicyFetcher final : public PolicyFetcher {
 public:
  HttpsPolicyFetcher(asio::any_io_executor executor, dns::Resolver& resolver,
                     std::shared_ptr<asio::ssl::context> tls_context, FetchOptions options)
      : executor_(std::move(executor)),
        resolver_(resolver),
        tls_context_(std::move(tls_context)),
        options_(options) {}

  asio::awaitable<FetchResult> fetch(std::string domain) override {
    while (!domain.empty() && domain.back() == '.') {
      domain.pop_back();
    }
    auto attempt =
        std::make_shared<Attempt>(executor_, resolver_, tls_context_, options_, lowercase(domain));
    attempt->deadline.expires_after(options_.timeout);
    asio::co_spawn(executor_, Attempt::run(attempt), [attempt](std::exception_ptr exception) {
      if (exception) {
        attempt->finish(failure("internal", "policy fetch failed: " + describe(exception)));
      }
    });
    // The deadline timer doubles as the completion signal: the attempt
    // cancels it when done; if it expires, the fetch took too long.
    std::error_code error;
    if (!attempt->result) {
      std::tie(error) = co_await attempt->deadline.async_wait(use_tuple);
    }
    if (attempt->result) {
      co_return std::move(*attempt->result);
    }
    attempt->abandon();
    if (error) {
      co_return failure("cancelled", "policy fetch for " + domain + " was cancelled");
    }
    co_return failure("timeout", "policy fetch from " + attempt->where() + " took longer than " +
                                     std::to_string(options_.timeout.count()) + " ms");
  }

 private:
  asio::any_io_executor executor_;
  dns::Resolver& resolver_;
  std::shared_ptr<asio::ssl::context> tls_context_;
  FetchOptions options_;
};

}  // namespace

std::string_view rfc8460_result_type(FetchErrorKind kind) {
  switch (kind) {
    case FetchErrorKind::fetch_error:
      return "sts-policy-fetch-error";
    case FetchErrorKind::webpki_invalid:
      return "sts-webpki-invalid";
  }
  return "sts-policy-fetch-error";
}

std::unique_ptr<PolicyFetcher> make_https_policy_fetcher(
    asio::any_io_executor executor, dns::Resolver& resolver,
    std::shared_ptr<asio::ssl::context> tls_context, FetchOptions options) {
  return std::make_unique<HttpsPolicyFetcher>(std::move(executor), resolver, std::move(tls_context),
                                              options);
}

}  // namespace stsrelay::sts
