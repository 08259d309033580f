#include "tests/support/fake_https_server.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/ssl.h>

namespace stsrelay::testing {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_request_bytes = 64 * 1024;

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 307:
      return "Temporary Redirect";
    case 404:
      return "Not Found";
    case 500:
      return "Internal Server Error";
    default:
      return "Whatever";
  }
}

std::string to_hex(std::size_t value) {
  char text[32];
  std::snprintf(text, sizeof text, "%zx", value);
  return text;
}

std::string render(const FakeHttpsResponse& response) {
  if (response.raw) {
    return *response.raw;
  }
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " +
                    std::string(reason_phrase(response.status)) + "\r\n";
  for (const auto& [name, value] : response.headers) {
    out += name + ": " + value + "\r\n";
  }
  switch (response.framing) {
    case FakeHttpsResponse::Framing::content_length:
      out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
      break;
    case FakeHttpsResponse::Framing::chunked:
      out += "Transfer-Encoding: chunked\r\n";
      break;
    case FakeHttpsResponse::Framing::close:
      break;
  }
  out += "Connection: close\r\n\r\n";
  if (response.framing != FakeHttpsResponse::Framing::chunked) {
    return out + response.body;
  }
  std::size_t step = std::max<std::size_t>(response.chunk_size, 1);
  for (std::size_t offset = 0; offset < response.body.size(); offset += step) {
    std::string_view chunk = std::string_view(response.body).substr(offset, step);
    out += to_hex(chunk.size()) + response.chunk_extension + "\r\n";
    out.append(chunk);
    out += "\r\n";
  }
  out += "0" + response.chunk_extension + "\r\n";
  if (!response.trailer.empty()) {
    out += response.trailer + "\r\n";
  }
  return out + "\r\n";
}

FakeHttpsRequest parse_request(std::string_view head) {
  FakeHttpsRequest request;
  auto next_line = [&head]() {
    std::size_t end = head.find("\r\n");
    std::string_view line = head.substr(0, end);
    head.remove_prefix(end == std::string_view::npos ? head.size() : end + 2);
    return line;
  };
  std::string_view request_line = next_line();
  std::size_t first_space = request_line.find(' ');
  std::size_t second_space = request_line.find(' ', first_space + 1);
  request.method = std::string(request_line.substr(0, first_space));
  if (first_space != std::string_view::npos) {
    request.target =
        std::string(request_line.substr(first_space + 1, second_space - first_space - 1));
  }
  if (second_space != std::string_view::npos) {
    request.version = std::string(request_line.substr(second_space + 1));
  }
  for (std::string_view line = next_line(); !line.empty(); line = next_line()) {
    std::size_t colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') {
      value.remove_prefix(1);
    }
    request.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  return request;
}

}  // namespace

FakeHttpsResponse FakeHttpsResponse::policy(std::string body) {
  FakeHttpsResponse response;
  response.body = std::move(body);
  return response;
}

FakeHttpsResponse FakeHttpsResponse::redirect(int status, std::string location) {
  FakeHttpsResponse response;
  response.status = status;
  response.headers = {{"Location", std::move(location)}, {"Content-Type", "text/html"}};
  response.body = "<a href=\"elsewhere\">moved</a>";
  return response;
}

std::optional<std::string> FakeHttpsRequest::header(std::string_view name) const {
  for (const auto& [field, value] : headers) {
    if (equal_ignoring_case(field, name)) {
      return value;
    }
  }
  return std::nullopt;
}

struct FakeHttpsServer::Impl {
  asio::io_context io;
  std::optional<asio::ssl::context> tls;
  tcp::acceptor acceptor{io};
  std::string address;
  std::uint16_t port = 0;

  mutable std::mutex mutex;
  FakeHttpsResponse response;
  std::vector<FakeHttpsRequest> requests;
  std::size_t connections = 0;

  std::thread thread;

  FakeHttpsResponse current_response() const {
    std::lock_guard lock(mutex);
    return response;
  }

  static asio::awaitable<void> accept_loop(Impl* self) {
    for (;;) {
      auto [error, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (error) {
        if (error == asio::error::operation_aborted || !self->acceptor.is_open()) {
          co_return;
        }
        continue;
      }
      {
        std::lock_guard lock(self->mutex);
        ++self->connections;
      }
      asio::co_spawn(self->io, serve(self, std::move(socket)), asio::detached);
    }
  }

  static asio::awaitable<void> serve(Impl* self, tcp::socket socket) {
    if (!self->tls) {
      // g++ 12 destroys a temporary argument of a coroutine twice: name it.
      FakeHttpsRequest about;
      co_await exchange(self, socket, std::move(about));
    } else {
      asio::ssl::stream<tcp::socket&> stream(socket, *self->tls);
      auto [error] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
      if (!error) {
        FakeHttpsRequest about;
        const char* server_name =
            SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
        about.server_name = server_name == nullptr ? "" : server_name;
        about.tls_version = SSL_get_version(stream.native_handle());
        co_await exchange(self, stream, std::move(about));
        // close_notify, so a body delimited by the close is complete.
        co_await stream.async_shutdown(use_tuple);
      }
    }
    std::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  template <typename Stream>
  static asio::awaitable<void> exchange(Impl* self, Stream& stream, FakeHttpsRequest request) {
    // Like a real server, answer 400 to what is not an HTTP request (such as
    // a TLS ClientHello sent to the plain HTTP port).
    std::string input;
    std::size_t head_end = std::string::npos;
    std::array<char, 4096> buffer;
    while (head_end == std::string::npos) {
      auto [error, length] = co_await stream.async_read_some(asio::buffer(buffer), use_tuple);
      if (error) {
        co_return;
      }
      input.append(buffer.data(), length);
      if (!(input.front() >= 'A' && input.front() <= 'Z') || input.size() > max_request_bytes) {
        std::string refusal =
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        co_await asio::async_write(stream, asio::buffer(refusal), use_tuple);
        co_return;
      }
      head_end = input.find("\r\n\r\n");
    }
    std::size_t length = head_end + 4;
    FakeHttpsRequest parsed = parse_request(std::string_view(input).substr(0, length));
    parsed.server_name = std::move(request.server_name);
    parsed.tls_version = std::move(request.tls_version);
    {
      std::lock_guard lock(self->mutex);
      self->requests.push_back(std::move(parsed));
    }
    FakeHttpsResponse response = self->current_response();
    if (response.delay.count() > 0) {
      asio::steady_timer pause(self->io, response.delay);
      co_await pause.async_wait(use_tuple);
    }
    std::string output = render(response);
    co_await asio::async_write(stream, asio::buffer(output), use_tuple);
  }
};

FakeHttpsServer::FakeHttpsServer(Options options, FakeHttpsResponse response)
    : impl_(std::make_unique<Impl>()) {
  impl_->response = std::move(response);
  if (!options.cert_file.empty()) {
    impl_->tls.emplace(asio::ssl::context::tls_server);
    SSL_CTX* context = impl_->tls->native_handle();
    if (options.tls11_only) {
      // OpenSSL 3 allows TLS 1.1 only at security level 0.
      SSL_CTX_set_security_level(context, 0);
      SSL_CTX_set_min_proto_version(context, TLS1_1_VERSION);
      SSL_CTX_set_max_proto_version(context, TLS1_1_VERSION);
    } else {
      SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    }
    impl_->tls->use_certificate_chain_file(options.cert_file.string());
    impl_->tls->use_private_key_file(options.key_file.string(), asio::ssl::context::pem);
  }
  tcp::endpoint endpoint(asio::ip::make_address(options.address), options.port);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->address = options.address;
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->io, Impl::accept_loop(impl_.get()), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

FakeHttpsServer::~FakeHttpsServer() {
  impl_->io.stop();
  impl_->thread.join();
}

const std::string& FakeHttpsServer::address() const {
  return impl_->address;
}

std::uint16_t FakeHttpsServer::port() const {
  return impl_->port;
}

void FakeHttpsServer::set_response(FakeHttpsResponse response) {
  std::lock_guard lock(impl_->mutex);
  impl_->response = std::move(response);
}

std::vector<FakeHttpsRequest> FakeHttpsServer::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->requests;
}

std::size_t FakeHttpsServer::connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connections;
}

}  // namespace stsrelay::testing
