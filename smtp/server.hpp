#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

#include "smtp/received_message.hpp"
#include "smtp/server_session.hpp"

namespace stsrelay::smtp {

// Where the server hands each finished message. store() completes only once
// the message is durable: its result decides between 250 and 451.
class MessageSink {
 public:
  virtual ~MessageSink() = default;
  virtual asio::awaitable<tl::expected<void, std::string>> store(ReceivedMessage message) = 0;
};

// What the server reports about connections (the relay turns it into log events).
class ServerObserver {
 public:
  virtual ~ServerObserver() = default;
  virtual void client_refused(std::string_view /*client*/, std::string_view /*reason*/) {}
  virtual void session_opened(std::string_view /*client*/) {}
  virtual void session_closed(std::string_view /*client*/, std::string_view /*reason*/) {}
  virtual void tls_established(std::string_view /*client*/, const TlsDetails& /*tls*/) {}
  virtual void tls_failed(std::string_view /*client*/, std::string_view /*error*/) {}
  // A bug: a coroutine of the server threw. The connection is gone, the server goes on.
  virtual void internal_error(std::string_view /*client*/, std::string_view /*what*/) {}
};

struct ServerOptions {
  std::vector<asio::ip::tcp::endpoint> endpoints;
  ServerSessionSettings session;  // starttls_offered is set from `tls`
  std::size_t max_connections = 1000;
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(5);
  // Clients for which this returns false get 554 5.7.1 at connect.
  std::function<bool(const asio::ip::address&)> client_allowed;
  std::shared_ptr<asio::ssl::context> tls;  // null: STARTTLS not offered
};

// The accepting SMTP server: one acceptor per endpoint and one coroutine per
// connection, all on one executor, driving a ServerSession each.
class Server {
 public:
  Server(asio::any_io_executor executor, ServerOptions options, MessageSink& sink,
         ServerObserver& observer);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every endpoint; the error names the address that failed.
  tl::expected<void, std::string> listen();
  // The bound addresses (a port 0 endpoint shows the port it got).
  std::vector<asio::ip::tcp::endpoint> local_endpoints() const;
  void start();

  // Stops accepting; each session ends at its next step: an idle client or
  // one in the middle of DATA gets 421 4.3.2, a message being committed is
  // committed and acknowledged first.
  void stop();
  // Completes once stop() was called and every session has ended.
  asio::awaitable<void> drained();
  std::size_t active_sessions() const;

  struct Impl;

 private:
  class Connection;
  std::shared_ptr<Impl> impl_;
};

}  // namespace stsrelay::smtp
