#include "relay/control_socket.hpp"

#include <sys/stat.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace stsrelay::relay {

namespace {

using asio::local::stream_protocol;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_command_length = 256;

}  // namespace

struct ControlSocket::Impl {
  Impl(asio::any_io_executor executor, std::filesystem::path socket_path, Handler command_handler)
      : acceptor(executor), path(std::move(socket_path)), handler(std::move(command_handler)) {}

  stream_protocol::acceptor acceptor;
  std::filesystem::path path;
  Handler handler;

  static asio::awaitable<void> serve(std::shared_ptr<Impl> self, stream_protocol::socket peer) {
    std::string line;
    auto [error, length] = co_await asio::async_read_until(
        peer, asio::dynamic_buffer(line, max_command_length), '\n', use_tuple);
    if (error) {
      co_return;
    }
    std::string command = line.substr(0, length - 1);
    std::string reply = self->handler(command) + "\n";
    co_await asio::async_write(peer, asio::buffer(reply), use_tuple);
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [error, peer] = co_await self->acceptor.async_accept(use_tuple);
      if (error) {
        co_return;  // closed
      }
      asio::co_spawn(self->acceptor.get_executor(), serve(self, std::move(peer)), asio::detached);
    }
  }
};

ControlSocket::ControlSocket(asio::any_io_executor executor, std::filesystem::path path,
                             Handler handler)
    : impl_(std::make_shared<Impl>(executor, std::move(path), std::move(handler))) {}

ControlSocket::~ControlSocket() {
  close();
}

tl::expected<void, std::string> ControlSocket::listen() {
  const std::string where = impl_->path.string();
  if (std::filesystem::exists(impl_->path)) {
    if (send_control_command(impl_->path, "ping")) {
      return tl::unexpected("another stsrelay is running on this queue (" + where + " answers)");
    }
    std::error_code ignored;
    std::filesystem::remove(impl_->path, ignored);
  }
  std::error_code error;
  impl_->acceptor.open(stream_protocol(), error);
  if (!error) {
    impl_->acceptor.bind(stream_protocol::endpoint(where), error);
  }
  if (!error) {
    ::chmod(where.c_str(), 0600);
    impl_->acceptor.listen(asio::socket_base::max_listen_connections, error);
  }
  if (error) {
    return tl::unexpected("cannot listen on " + where + ": " + error.message());
  }
  asio::co_spawn(impl_->acceptor.get_executor(), Impl::accept_loop(impl_), asio::detached);
  return {};
}

void ControlSocket::close() {
  if (impl_->acceptor.is_open()) {
    std::error_code ignored;
    impl_->acceptor.close(ignored);
    std::filesystem::remove(impl_->path, ignored);
  }
}

std::filesystem::path control_socket_path(const std::filesystem::path& queue_directory) {
  return queue_directory / "control.sock";
}

tl::expected<std::string, std::string> send_control_command(const std::filesystem::path& path,
                                                            std::string_view command) {
  asio::io_context io;
  stream_protocol::socket socket(io);
  std::error_code error;
  socket.connect(stream_protocol::endpoint(path.string()), error);
  if (error) {
    return tl::unexpected("no stsrelay daemon answers on " + path.string() + ": " +
                          error.message());
  }
  std::string request = std::string(command) + "\n";
  asio::write(socket, asio::buffer(request), error);
  std::string reply;
  if (!error) {
    asio::read_until(socket, asio::dynamic_buffer(reply, max_command_length), '\n', error);
  }
  if (error && reply.empty()) {
    return tl::unexpected("the daemon on " + path.string() + " did not answer: " + error.message());
  }
  while (!reply.empty() && (reply.back() == '\n' || reply.back() == '\r')) {
    reply.pop_back();
  }
  return reply;
}

}  // namespace stsrelay::relay
