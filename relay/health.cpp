#include "relay/health.hpp"

#include <string>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

namespace stsrelay::relay {

namespace {

// A wildcard listener is reached through the loopback address of its family.
asio::ip::address contact_address(const asio::ip::address& listening) {
  if (!listening.is_unspecified()) {
    return listening;
  }
  if (listening.is_v6()) {
    return asio::ip::address_v6::loopback();
  }
  return asio::ip::address_v4::loopback();
}

}  // namespace

int check_health(const Config& config, std::chrono::milliseconds timeout, std::ostream& out,
                 std::ostream& err) {
  if (config.listen.addresses.empty()) {
    err << "stsrelay: health: listen.addresses is empty\n";
    return 1;
  }
  const asio::ip::tcp::endpoint endpoint(contact_address(config.listen.addresses.front().address),
                                         config.listen.addresses.front().port);
  const std::string where = Endpoint{endpoint.address(), endpoint.port()}.to_string();

  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  std::string failure;
  std::string greeting;
  asio::streambuf input;
  socket.async_connect(endpoint, [&](std::error_code error) {
    if (error) {
      failure = "cannot connect to " + where + ": " + error.message();
      return;
    }
    // The greeting may span several lines ("220-"); its last line ends it.
    asio::async_read_until(
        socket, input, std::string("\r\n"), [&](std::error_code read_error, std::size_t length) {
          if (read_error) {
            failure = "no greeting from " + where + ": " + read_error.message();
            return;
          }
          greeting.assign(asio::buffers_begin(input.data()),
                          asio::buffers_begin(input.data()) + static_cast<std::ptrdiff_t>(length));
          greeting.erase(greeting.find_last_not_of("\r\n") + 1);
          if (greeting.rfind("220", 0) != 0) {
            failure = where + " greeted with \"" + greeting + "\"";
            return;
          }
          asio::async_write(socket, asio::buffer("QUIT\r\n", 6),
                            [](std::error_code, std::size_t) {});
        });
  });
  io.run_for(timeout);
  if (!io.stopped()) {
    std::error_code ignored;
    socket.close(ignored);
    if (failure.empty() && greeting.empty()) {
      failure = "no greeting from " + where + " within " + std::to_string(timeout.count()) + " ms";
    }
  }
  if (!failure.empty()) {
    err << "stsrelay: health: " << failure << "\n";
    return 1;
  }
  out << "ok: " << where << " " << greeting << "\n";
  return 0;
}

}  // namespace stsrelay::relay
