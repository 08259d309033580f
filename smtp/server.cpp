#include "smtp/server.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <list>
#include <optional>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/ssl.h>

namespace stsrelay::smtp {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// How long a client that is being turned away, or that is being told the
// session is over, gets to read our last words.
constexpr std::chrono::seconds farewell_timeout{10};
constexpr std::size_t refused_client_max_commands = 5;

std::string client_text(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

std::string describe(std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& exception) {
    return exception.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

struct Server::Impl {
  asio::any_io_executor executor;
  ServerOptions options;
  MessageSink& sink;
  ServerObserver& observer;
  std::vector<tcp::acceptor> acceptors;
  std::list<std::weak_ptr<Connection>> connections;
  std::size_t active = 0;
  bool stopping = false;
  asio::steady_timer drained_signal;

  Impl(asio::any_io_executor ex, ServerOptions opts, MessageSink& s, ServerObserver& o)
      : executor(ex), options(std::move(opts)), sink(s), observer(o), drained_signal(ex) {
    drained_signal.expires_at(asio::steady_timer::time_point::max());
  }

  void session_ended() {
    --active;
    if (stopping && active == 0) {
      drained_signal.cancel();
    }
  }

  // A coroutine of ours that throws is a bug: it must not take the daemon
  // down, and it must not go unnoticed.
  auto report_failure(std::string client) {
    return [this, client = std::move(client)](std::exception_ptr failure) {
      if (failure) {
        observer.internal_error(client, describe(failure));
      }
    };
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> server, tcp::acceptor& acceptor);
};

// One client connection: owns the socket, the optional TLS layer and the
// session core, and moves bytes between them. A watchdog timer bounds every
// read and write: when it fires the pending operation is cancelled and the
// client is told why, or, if even that times out, the socket is closed.
class Server::Connection : public std::enable_shared_from_this<Server::Connection> {
 public:
  Connection(std::shared_ptr<Server::Impl> server, tcp::socket socket, std::string client)
      : server_(std::move(server)),
        socket_(std::move(socket)),
        deadline_(socket_.get_executor()),
        client_(std::move(client)),
        session_(session_settings(*server_), client_) {}

  static asio::awaitable<void> run(std::shared_ptr<Connection> self) {
    asio::co_spawn(self->socket_.get_executor(), watchdog(self),
                   self->server_->report_failure(self->client_));
    self->server_->observer.session_opened(self->client_);
    std::string reason = co_await self->converse();
    self->close();
    self->server_->observer.session_closed(self->client_, reason);
  }

  void request_stop() {
    stop_requested_ = true;
    if (reading_) {
      socket_.cancel();
    }
  }

 private:
  static ServerSessionSettings session_settings(const Server::Impl& server) {
    ServerSessionSettings settings = server.options.session;
    settings.starttls_offered = server.options.tls != nullptr;
    return settings;
  }

  asio::awaitable<std::string> converse() {
    session_.greet();
    for (;;) {
      switch (session_.next()) {
        case ServerSession::Event::need_input: {
          if (!co_await flush()) {
            co_return "write failed";
          }
          if (stop_requested_) {
            session_.shutting_down();
            break;
          }
          auto [error, length] = co_await read_some();
          if (!error) {
            session_.receive(std::string_view(buffer_.data(), length));
          } else if (timed_out_) {
            session_.timed_out();
          } else if (stop_requested_) {
            session_.shutting_down();
          } else {
            co_return error == asio::error::eof ? "client disconnected" : error.message();
          }
          break;
        }
        case ServerSession::Event::message_ready: {
          disarm();  // committing is our time, not the client's
          auto stored = co_await server_->sink.store(session_.take_message());
          if (stored) {
            session_.message_queued();
          } else {
            session_.message_failed(stored.error());
          }
          break;
        }
        case ServerSession::Event::start_tls: {
          if (!co_await flush()) {
            co_return "write failed";
          }
          auto tls = co_await handshake();
          if (!tls) {
            server_->observer.tls_failed(client_, tls.error());
            co_return "TLS handshake failed";
          }
          server_->observer.tls_established(client_, *tls);
          session_.tls_started(*tls);
          break;
        }
        case ServerSession::Event::close: {
          co_await flush();
          co_return timed_out_ ? "idle timeout" : (stop_requested_ ? "shutdown" : "quit");
        }
      }
    }
  }

  asio::awaitable<std::tuple<std::error_code, std::size_t>> read_some() {
    arm(server_->options.idle_timeout);
    reading_ = true;
    std::tuple<std::error_code, std::size_t> result;
    if (tls_stream_) {
      result = co_await tls_stream_->async_read_some(asio::buffer(buffer_), use_tuple);
    } else {
      result = co_await socket_.async_read_some(asio::buffer(buffer_), use_tuple);
    }
    reading_ = false;
    co_return result;
  }

  asio::awaitable<bool> flush() {
    std::string output = session_.take_output();
    if (output.empty()) {
      co_return true;
    }
    // A client that stopped reading gets the idle timeout to drain our
    // replies; when we are already saying goodbye, a short one.
    arm(timed_out_ || stop_requested_ ? std::chrono::milliseconds(farewell_timeout)
                                      : server_->options.idle_timeout);
    std::error_code error;
    if (tls_stream_) {
      std::tie(error, std::ignore) =
          co_await asio::async_write(*tls_stream_, asio::buffer(output), use_tuple);
    } else {
      std::tie(error, std::ignore) =
          co_await asio::async_write(socket_, asio::buffer(output), use_tuple);
    }
    co_return !error;
  }

  asio::awaitable<tl::expected<TlsDetails, std::string>> handshake() {
    tls_stream_.emplace(socket_, *server_->options.tls);
    arm(server_->options.idle_timeout);
    auto [error] = co_await tls_stream_->async_handshake(asio::ssl::stream_base::server, use_tuple);
    if (error) {
      co_return tl::unexpected(timed_out_ ? std::string("timeout") : error.message());
    }
    SSL* ssl = tls_stream_->native_handle();
    co_return TlsDetails{SSL_get_version(ssl), SSL_get_cipher_name(ssl)};
  }

  void arm(std::chrono::milliseconds timeout) { deadline_.expires_after(timeout); }
  void disarm() { deadline_.expires_at(asio::steady_timer::time_point::max()); }

  void close() {
    closed_ = true;
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    deadline_.cancel();
  }

  static asio::awaitable<void> watchdog(std::shared_ptr<Connection> self) {
    while (!self->closed_) {
      co_await self->deadline_.async_wait(use_tuple);
      if (self->closed_) {
        break;
      }
      if (self->deadline_.expiry() > asio::steady_timer::clock_type::now()) {
        continue;  // re-armed while we waited
      }
      if (self->timed_out_ || self->stop_requested_) {
        // Even the farewell did not get through: give up on this client.
        std::error_code ignored;
        self->socket_.close(ignored);
        break;
      }
      self->timed_out_ = true;
      self->socket_.cancel();
      self->disarm();
    }
  }

  std::shared_ptr<Server::Impl> server_;
  tcp::socket socket_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_stream_;
  asio::steady_timer deadline_;
  std::string client_;
  ServerSession session_;
  std::array<char, 64 * 1024> buffer_;
  bool reading_ = false;
  bool timed_out_ = false;
  bool stop_requested_ = false;
  bool closed_ = false;
};

namespace {

// A client outside listen.allowed_networks gets 554 at connect and, as
// RFC 5321 §3.1 asks, nothing but 503 until it says QUIT.
asio::awaitable<void> refuse_client(tcp::socket accepted, std::string greeting) {
  // The deadline's handler may run after this coroutine has finished, so the
  // socket it closes is shared with it rather than borrowed.
  auto socket = std::make_shared<tcp::socket>(std::move(accepted));
  asio::steady_timer deadline(socket->get_executor());
  deadline.expires_after(farewell_timeout);
  deadline.async_wait([socket](std::error_code error) {
    if (!error) {
      std::error_code ignored;
      socket->close(ignored);
    }
  });
  auto [error, written] = co_await asio::async_write(*socket, asio::buffer(greeting), use_tuple);
  std::string input;
  std::array<char, 512> buffer;
  for (std::size_t commands = 0; !error && commands < refused_client_max_commands;) {
    auto [read_error, length] = co_await socket->async_read_some(asio::buffer(buffer), use_tuple);
    if (read_error) {
      break;
    }
    input.append(buffer.data(), length);
    std::size_t newline;
    while (!error && (newline = input.find('\n')) != std::string::npos) {
      std::string line = input.substr(0, newline);
      input.erase(0, newline + 1);
      ++commands;
      // Verbs are case-insensitive (RFC 5321 §2.4): "Quit" is QUIT too.
      bool quit =
          line.size() >= 4 &&
          std::equal(line.begin(), line.begin() + 4, "QUIT", [](char received, char expected) {
            return std::toupper(static_cast<unsigned char>(received)) == expected;
          });
      std::string reply = quit ? "221 2.0.0 Bye\r\n" : "503 5.7.1 Access denied\r\n";
      std::tie(error, written) =
          co_await asio::async_write(*socket, asio::buffer(reply), use_tuple);
      if (quit) {
        error = asio::error::eof;
      }
    }
    if (input.size() > buffer.size()) {
      break;
    }
  }
  deadline.cancel();
  std::error_code ignored;
  socket->close(ignored);
}

}  // namespace

Server::Server(asio::any_io_executor executor, ServerOptions options, MessageSink& sink,
               ServerObserver& observer)
    : impl_(std::make_shared<Impl>(executor, std::move(options), sink, observer)) {}

Server::~Server() {
  for (auto& acceptor : impl_->acceptors) {
    std::error_code ignored;
    acceptor.close(ignored);
  }
}

tl::expected<void, std::string> Server::listen() {
  for (const auto& endpoint : impl_->options.endpoints) {
    tcp::acceptor acceptor(impl_->executor);
    std::error_code error;
    auto fail = [&](std::string_view what) {
      std::string where = endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]:"
                                                     : endpoint.address().to_string() + ":";
      return tl::unexpected(std::string(what) + " " + where + std::to_string(endpoint.port()) +
                            ": " + error.message());
    };
    if (acceptor.open(endpoint.protocol(), error); error) {
      return fail("cannot open a socket for");
    }
    acceptor.set_option(tcp::acceptor::reuse_address(true), error);
    if (endpoint.address().is_v6()) {
      // "[::]:25" and "0.0.0.0:25" may both be listed: keep them apart.
      acceptor.set_option(asio::ip::v6_only(true), error);
    }
    if (acceptor.bind(endpoint, error); error) {
      return fail("cannot listen on");
    }
    if (acceptor.listen(asio::socket_base::max_listen_connections, error); error) {
      return fail("cannot listen on");
    }
    impl_->acceptors.push_back(std::move(acceptor));
  }
  return {};
}

std::vector<tcp::endpoint> Server::local_endpoints() const {
  std::vector<tcp::endpoint> endpoints;
  for (const auto& acceptor : impl_->acceptors) {
    std::error_code ignored;
    endpoints.push_back(acceptor.local_endpoint(ignored));
  }
  return endpoints;
}

void Server::start() {
  for (auto& acceptor : impl_->acceptors) {
    asio::co_spawn(impl_->executor, Impl::accept_loop(impl_, acceptor),
                   impl_->report_failure("listener"));
  }
}

void Server::stop() {
  impl_->stopping = true;
  for (auto& acceptor : impl_->acceptors) {
    std::error_code ignored;
    acceptor.close(ignored);
  }
  for (auto& weak : impl_->connections) {
    if (auto connection = weak.lock()) {
      connection->request_stop();
    }
  }
  if (impl_->active == 0) {
    impl_->drained_signal.cancel();
  }
}

asio::awaitable<void> Server::drained() {
  auto impl = impl_;
  while (!(impl->stopping && impl->active == 0)) {
    co_await impl->drained_signal.async_wait(use_tuple);
  }
}

std::size_t Server::active_sessions() const {
  return impl_->active;
}

asio::awaitable<void> Server::Impl::accept_loop(std::shared_ptr<Impl> server,
                                                tcp::acceptor& acceptor) {
  while (!server->stopping) {
    auto [error, socket] = co_await acceptor.async_accept(use_tuple);
    if (error) {
      if (server->stopping || error == asio::error::operation_aborted) {
        co_return;
      }
      // EMFILE and friends: keep accepting once resources free up.
      asio::steady_timer pause(server->executor, std::chrono::milliseconds(100));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    std::error_code endpoint_error;
    auto peer = socket.remote_endpoint(endpoint_error);
    if (endpoint_error) {
      continue;
    }
    std::string client = client_text(peer.address());
    const auto& options = server->options;
    if (options.client_allowed && !options.client_allowed(peer.address())) {
      server->observer.client_refused(client, "network not allowed");
      asio::co_spawn(server->executor,
                     refuse_client(std::move(socket), "554 5.7.1 " + options.session.hostname +
                                                          " Access denied for " + client +
                                                          ": not allowed to relay\r\n"),
                     server->report_failure(client));
      continue;
    }
    if (server->active >= options.max_connections) {
      server->observer.client_refused(client, "too many connections");
      auto busy = std::make_shared<std::string>("421 4.7.0 " + options.session.hostname +
                                                " Too many connections, try again later\r\n");
      auto shared_socket = std::make_shared<tcp::socket>(std::move(socket));
      asio::async_write(*shared_socket, asio::buffer(*busy),
                        [busy, shared_socket](std::error_code, std::size_t) {
                          std::error_code ignored;
                          shared_socket->close(ignored);
                        });
      continue;
    }
    std::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto connection = std::make_shared<Server::Connection>(server, std::move(socket), client);
    server->connections.remove_if([](const auto& weak) { return weak.expired(); });
    server->connections.push_back(connection);
    ++server->active;
    asio::co_spawn(server->executor, Connection::run(std::move(connection)),
                   [server, report = server->report_failure(client)](std::exception_ptr failure) {
                     server->session_ended();
                     report(failure);
                   });
  }
}

}  // namespace stsrelay::smtp
