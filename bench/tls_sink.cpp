// A STARTTLS-capable MX for the delivery benchmark: accepts every message and
// throws it away, counting what arrived.
//
//   tls_sink --listen 127.0.0.25:2525 --cert mx.pem --key mx.key --count-file FILE
//
// It is the relay's own SMTP server (PIPELINING, 8BITMIME, STARTTLS, ...) with
// a message sink that only counts, so it costs the same for every relay it is
// measured against. On SIGUSR1 and on exit (SIGTERM, SIGINT) it writes one
// line to the count file, replaced atomically:
//
//   MESSAGES CONNECTIONS FULL_HANDSHAKES LAST_MESSAGE_TIME RESUMED_HANDSHAKES
//
// LAST_MESSAGE_TIME being when the latest message arrived, in seconds since
// the epoch (as `date +%s.%N` prints), so a script polling the file still
// learns exactly when the last of N messages arrived. FULL_HANDSHAKES and
// RESUMED_HANDSHAKES together are every completed STARTTLS handshake: a
// resumed one (a TLS 1.2 session ID or ticket, a TLS 1.3 ticket) costs no
// certificate signature. Session tickets are on (OpenSSL's default for a
// server), as on a typical MX.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <openssl/ssl.h>

#include "relay/endpoint.hpp"
#include "smtp/server.hpp"
#include "tls/server_context.hpp"

namespace {

using namespace stsrelay;

struct Counts {
  std::uint64_t messages = 0;
  std::uint64_t connections = 0;
  std::uint64_t tls_handshakes = 0;  // full and resumed
  std::chrono::system_clock::time_point last_message{};
  // The server context, whose statistics count the resumed handshakes.
  SSL_CTX* tls = nullptr;

  std::uint64_t resumed_handshakes() const {
    return tls == nullptr ? 0 : static_cast<std::uint64_t>(SSL_CTX_sess_hits(tls));
  }
};

class CountingSink : public smtp::MessageSink {
 public:
  explicit CountingSink(Counts& counts) : counts_(counts) {}

  asio::awaitable<tl::expected<void, std::string>> store(smtp::ReceivedMessage) override {
    ++counts_.messages;
    counts_.last_message = std::chrono::system_clock::now();
    co_return tl::expected<void, std::string>{};
  }

 private:
  Counts& counts_;
};

class CountingObserver : public smtp::ServerObserver {
 public:
  explicit CountingObserver(Counts& counts) : counts_(counts) {}

  void session_opened(std::string_view) override { ++counts_.connections; }
  void tls_established(std::string_view, const smtp::TlsDetails&) override {
    ++counts_.tls_handshakes;
  }
  void tls_failed(std::string_view client, std::string_view error) override {
    std::cerr << "tls_sink: STARTTLS with " << client << " failed: " << error << '\n';
  }
  void internal_error(std::string_view client, std::string_view what) override {
    std::cerr << "tls_sink: session with " << client << " failed: " << what << '\n';
  }

 private:
  Counts& counts_;
};

void write_counts(const Counts& counts, const std::filesystem::path& file) {
  const auto since_epoch =
      std::chrono::duration<double>(counts.last_message.time_since_epoch()).count();
  auto temporary = file;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    // A resumption counts as a hit when the server accepts the session,
    // before the handshake is through: never more than were completed.
    const std::uint64_t resumed = std::min(counts.resumed_handshakes(), counts.tls_handshakes);
    out << fmt::format("{} {} {} {:.6f} {}\n", counts.messages, counts.connections,
                       counts.tls_handshakes - resumed, since_epoch, resumed);
  }
  std::filesystem::rename(temporary, file);
}

asio::awaitable<void> handle_signals(asio::signal_set& signals, smtp::Server& server,
                                     const Counts& counts, std::filesystem::path count_file) {
  for (;;) {
    auto [error, signal] =
        co_await signals.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (error) {
      co_return;
    }
    if (signal != SIGUSR1) {
      server.stop();
      co_await server.drained();  // a message being received still counts
      write_counts(counts, count_file);
      signals.cancel();
      co_return;
    }
    write_counts(counts, count_file);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A STARTTLS-capable SMTP sink that counts and discards messages"};
  std::string listen;
  std::string cert_file;
  std::string key_file;
  std::filesystem::path count_file;
  std::string hostname = "mx.sink.test";
  app.add_option("--listen", listen, "ip:port to listen on")->required();
  app.add_option("--cert", cert_file, "PEM certificate chain for STARTTLS")->required();
  app.add_option("--key", key_file, "PEM private key")->required();
  app.add_option("--count-file", count_file, "where the counts go on SIGUSR1 and at exit")
      ->required();
  app.add_option("--hostname", hostname, "name in the greeting and EHLO reply");
  CLI11_PARSE(app, argc, argv);

  auto endpoint = relay::Endpoint::parse(listen);
  if (!endpoint) {
    std::cerr << "tls_sink: --listen: " << endpoint.error() << '\n';
    return 2;
  }
  auto context = tls::make_server_context(cert_file, key_file);
  if (!context) {
    std::cerr << "tls_sink: " << context.error() << '\n';
    return 2;
  }

  Counts counts;
  CountingSink sink(counts);
  CountingObserver observer(counts);
  std::uint64_t next_id = 0;

  smtp::ServerOptions options;
  options.endpoints.emplace_back(endpoint->address, endpoint->port);
  options.session.hostname = hostname;
  options.session.new_message_id = [&next_id] { return fmt::format("{:X}", ++next_id); };
  options.max_connections = 10000;
  options.client_allowed = [](const asio::ip::address&) { return true; };
  options.tls = std::make_shared<asio::ssl::context>(std::move(*context));
  counts.tls = options.tls->native_handle();

  asio::io_context io(1);
  smtp::Server server(io.get_executor(), std::move(options), sink, observer);
  if (auto listening = server.listen(); !listening) {
    std::cerr << "tls_sink: " << listening.error() << '\n';
    return 1;
  }
  server.start();
  write_counts(counts, count_file);  // the file exists once the port is open

  asio::signal_set signals(io, SIGTERM, SIGINT, SIGUSR1);
  asio::co_spawn(io, handle_signals(signals, server, counts, count_file),
                 [](std::exception_ptr failure) {
                   if (failure) {
                     std::rethrow_exception(failure);  // e.g. the count file cannot be written
                   }
                 });
  io.run();
  return 0;
}
