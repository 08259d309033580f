#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>
#include <tl/expected.hpp>

namespace stsrelay::relay {

// The running daemon's control channel: a Unix socket in the queue
// directory (reachable only by who can reach the queue), one command per
// connection, one line each way. Today's only command is "flush".
class ControlSocket {
 public:
  using Handler = std::function<std::string(std::string_view command)>;

  ControlSocket(asio::any_io_executor executor, std::filesystem::path path, Handler handler);
  ~ControlSocket();

  // Binds the socket; a stale file left by a daemon that died is replaced,
  // a live daemon's is not.
  tl::expected<void, std::string> listen();
  void close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The socket's place for a queue directory.
std::filesystem::path control_socket_path(const std::filesystem::path& queue_directory);

// Client side (`stsrelay queue flush`): sends one command, returns the reply line.
tl::expected<std::string, std::string> send_control_command(const std::filesystem::path& path,
                                                            std::string_view command);

}  // namespace stsrelay::relay
