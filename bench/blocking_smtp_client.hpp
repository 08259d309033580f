#pragma once

// A plaintext SMTP client connection for the benchmark probes: one blocking
// socket, every wait bounded by a timeout, replies read whole (multi-line
// ones too). The probes are sequential clients, so no event loop: what they
// time is the server, not a scheduler.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

#include <asio/ip/tcp.hpp>
#include <tl/expected.hpp>

#include "relay/endpoint.hpp"
#include "smtp/reply.hpp"
#include "smtp/reply_parser.hpp"

namespace stsrelay::bench {

class BlockingSmtpClient {
 public:
  using Timeout = std::chrono::milliseconds;

  static tl::expected<BlockingSmtpClient, std::string> connect(const relay::Endpoint& server,
                                                               Timeout timeout) {
    const asio::ip::tcp::endpoint endpoint(server.address, server.port);
    const int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return tl::unexpected(system_error("socket"));
    }
    BlockingSmtpClient client(fd);
    // Connect without blocking so that the timeout holds, then go back to blocking.
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
      if (errno != EINPROGRESS) {
        return tl::unexpected(system_error("connect to " + server.to_string()));
      }
      if (auto ready = wait_for(fd, POLLOUT, timeout); !ready) {
        return tl::unexpected("connect to " + server.to_string() + ": " + ready.error());
      }
      int error = 0;
      socklen_t length = sizeof error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) {
        return tl::unexpected("connect to " + server.to_string() + ": " + std::strerror(error));
      }
    }
    ::fcntl(fd, F_SETFL, flags);
    // Commands are small writes answered before the next one: Nagle would only add delay.
    const int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return client;
  }

  BlockingSmtpClient(BlockingSmtpClient&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), parser_(std::move(other.parser_)) {}
  BlockingSmtpClient& operator=(BlockingSmtpClient&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
      parser_ = std::move(other.parser_);
    }
    return *this;
  }
  BlockingSmtpClient(const BlockingSmtpClient&) = delete;
  BlockingSmtpClient& operator=(const BlockingSmtpClient&) = delete;
  ~BlockingSmtpClient() { close(); }

  int native_handle() const { return fd_; }

  void close() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  tl::expected<void, std::string> send(std::string_view bytes) {
    while (!bytes.empty()) {
      const auto sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) {
          continue;
        }
        return tl::unexpected(system_error("send"));
      }
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
    return {};
  }

  // The next whole reply, whatever its code.
  tl::expected<smtp::Reply, std::string> read_reply(Timeout timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto reply = parser_.next()) {
        return *reply;
      }
      const auto left =
          std::chrono::duration_cast<Timeout>(deadline - std::chrono::steady_clock::now());
      if (auto ready = wait_for(fd_, POLLIN, std::max(left, Timeout(0))); !ready) {
        return tl::unexpected("waiting for a reply: " + ready.error());
      }
      char buffer[4096];
      const auto received = ::recv(fd_, buffer, sizeof buffer, 0);
      if (received < 0) {
        if (errno == EINTR) {
          continue;
        }
        return tl::unexpected(system_error("recv"));
      }
      if (received == 0) {
        return tl::unexpected(std::string("the server closed the connection"));
      }
      parser_.append(std::string_view(buffer, static_cast<std::size_t>(received)));
    }
  }

  // The next reply, which must be a positive one (2xx, or 3xx when `intermediate_ok`).
  tl::expected<smtp::Reply, std::string> expect(std::string_view after, Timeout timeout,
                                                bool intermediate_ok = false) {
    auto reply = read_reply(timeout);
    if (!reply) {
      return tl::unexpected(std::string(after) + ": " + reply.error());
    }
    const int kind = reply->code / 100;
    if (kind != 2 && !(intermediate_ok && kind == 3)) {
      auto wire = reply->wire();
      while (!wire.empty() && (wire.back() == '\n' || wire.back() == '\r')) {
        wire.pop_back();
      }
      return tl::unexpected(std::string(after) + ": the server replied " + wire);
    }
    return reply;
  }

 private:
  explicit BlockingSmtpClient(int fd) : fd_(fd) {}

  static std::string system_error(const std::string& what) {
    return what + ": " + std::strerror(errno);
  }

  static tl::expected<void, std::string> wait_for(int fd, short events, Timeout timeout) {
    pollfd entry{fd, events, 0};
    for (;;) {
      const int ready = ::poll(&entry, 1, static_cast<int>(timeout.count()));
      if (ready > 0) {
        return {};
      }
      if (ready == 0) {
        return tl::unexpected("timed out after " + std::to_string(timeout.count()) + " ms");
      }
      if (errno != EINTR) {
        return tl::unexpected(system_error("poll"));
      }
    }
  }

  int fd_ = -1;
  smtp::ReplyParser parser_;
};

}  // namespace stsrelay::bench
