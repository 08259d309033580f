#include "smtp/starttls_probe.hpp"

#include <optional>

#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "smtp/reply_parser.hpp"

namespace stsrelay::smtp {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// One SMTP conversation over a plain socket that may turn into TLS.
class ProbeConnection {
 public:
  explicit ProbeConnection(tcp::socket& socket) : socket_(socket) {}

  asio::awaitable<tl::expected<Reply, std::string>> read_reply() {
    for (;;) {
      if (auto reply = parser_.next()) {
        co_return *reply;
      }
      char buffer[4096];
      std::error_code error;
      std::size_t length = 0;
      if (tls_) {
        std::tie(error, length) = co_await tls_->async_read_some(asio::buffer(buffer), use_tuple);
      } else {
        std::tie(error, length) = co_await socket_.async_read_some(asio::buffer(buffer), use_tuple);
      }
      if (error) {
        co_return tl::unexpected("connection lost: " + error.message());
      }
      parser_.append(std::string_view(buffer, length));
    }
  }

  asio::awaitable<tl::expected<Reply, std::string>> command(std::string line) {
    line += "\r\n";
    std::error_code error;
    if (tls_) {
      std::tie(error, std::ignore) =
          co_await asio::async_write(*tls_, asio::buffer(line), use_tuple);
    } else {
      std::tie(error, std::ignore) =
          co_await asio::async_write(socket_, asio::buffer(line), use_tuple);
    }
    if (error) {
      co_return tl::unexpected("connection lost: " + error.message());
    }
    co_return co_await read_reply();
  }

  asio::awaitable<std::error_code> start_tls(asio::ssl::context& context, const std::string& host) {
    // Whatever came in plaintext after the 220 is not the TLS server's to
    // say (RFC 3207 §4.2; the STARTTLS command injection of CVE-2011-0411
    // turned around): it must never be read as a reply over TLS.
    parser_ = ReplyParser();
    tls_.emplace(socket_, context);
    tls::prepare_client(tls_->native_handle(), host);
    auto [error] = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
    co_return error;
  }

  SSL* ssl() { return tls_->native_handle(); }

 private:
  tcp::socket& socket_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  ReplyParser parser_;
};

bool offers_starttls(const Reply& ehlo) {
  for (const auto& line : ehlo.lines) {
    std::string keyword = line.substr(0, line.find(' '));
    for (auto& c : keyword) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    if (keyword == "STARTTLS") {
      return true;
    }
  }
  return false;
}

asio::awaitable<void> converse(tcp::socket& socket, StarttlsProbe& probe, const std::string& host,
                               asio::ssl::context& tls_context, const std::string& helo_name) {
  ProbeConnection connection(socket);
  auto greeting = co_await connection.read_reply();
  if (!greeting || greeting->code != 220) {
    probe.error = greeting ? "greeting was " + std::to_string(greeting->code) : greeting.error();
    co_return;
  }
  auto ehlo = co_await connection.command("EHLO " + helo_name);
  if (!ehlo || ehlo->code != 250) {
    probe.error = ehlo ? "EHLO answered " + std::to_string(ehlo->code) : ehlo.error();
    co_return;
  }
  probe.starttls_offered = offers_starttls(*ehlo);
  if (!probe.starttls_offered) {
    probe.error = host + " does not offer STARTTLS";
    co_await connection.command("QUIT");
    co_return;
  }
  auto ready = co_await connection.command("STARTTLS");
  if (!ready || ready->code != 220) {
    probe.error = ready ? "STARTTLS answered " + std::to_string(ready->code) : ready.error();
    co_return;
  }
  if (auto error = co_await connection.start_tls(tls_context, host); error) {
    probe.error = "TLS handshake with " + host + " failed: " + error.message();
    co_return;
  }
  probe.tls_established = true;
  probe.tls_version = tls::protocol_version(connection.ssl());
  probe.cipher = tls::cipher_name(connection.ssl());
  probe.certificate = tls::verdict(connection.ssl(), host);
  if (probe.certificate.verdict != tls::CertificateVerdict::valid) {
    probe.error = probe.certificate.detail;
  }
  co_await connection.command("QUIT");
}

}  // namespace

asio::awaitable<StarttlsProbe> probe_starttls(std::string host,
                                              std::vector<asio::ip::address> addresses,
                                              std::uint16_t port,
                                              std::shared_ptr<asio::ssl::context> tls_context,
                                              std::string helo_name,
                                              std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  StarttlsProbe probe;
  if (addresses.empty()) {
    probe.error = host + " has no addresses";
    co_return probe;
  }
  // The deadline's handler may run after this coroutine has finished, so
  // what it touches is shared with it rather than borrowed.
  auto socket = std::make_shared<tcp::socket>(executor);
  auto timed_out = std::make_shared<bool>(false);
  asio::steady_timer deadline(executor, timeout);
  deadline.async_wait([socket, timed_out](std::error_code error) {
    if (!error) {
      *timed_out = true;
      std::error_code ignored;
      socket->close(ignored);
    }
  });
  for (const auto& address : addresses) {
    probe.address = address.to_string();
    std::error_code ignored;
    socket->close(ignored);
    auto [error] = co_await socket->async_connect(tcp::endpoint(address, port), use_tuple);
    if (!error) {
      probe.connected = true;
      break;
    }
    probe.error = "cannot connect to " + host + " [" + probe.address + "]:" + std::to_string(port) +
                  ": " + (*timed_out ? "timed out" : error.message());
    if (*timed_out) {
      break;
    }
  }
  if (probe.connected) {
    probe.error.clear();
    co_await converse(*socket, probe, host, *tls_context, helo_name);
    if (*timed_out && probe.error.empty()) {
      probe.error = "timed out";
    } else if (*timed_out) {
      probe.error += " (timed out)";
    }
  }
  deadline.cancel();
  std::error_code ignored;
  socket->close(ignored);
  co_return probe;
}

}  // namespace stsrelay::smtp
