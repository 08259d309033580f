#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>

namespace stsrelay::testing {

// A blocking SMTP client for tests: sends raw bytes, reads whole (multi-line)
// replies, and can switch to TLS, verifying the server against a CA file.
class SmtpTestClient {
 public:
  struct Reply {
    int code = 0;
    std::vector<std::string> lines;  // text after "250-" / "250 "
    std::string first_line() const { return lines.empty() ? "" : lines.front(); }
    bool has_line(std::string_view text) const;
  };

  SmtpTestClient(const asio::ip::tcp::endpoint& server,
                 std::optional<asio::ip::address> local_address = std::nullopt);
  ~SmtpTestClient();

  void send(std::string_view bytes);
  Reply read_reply();
  Reply command(std::string_view line);  // sends line + CRLF, reads the reply
  // Performs the handshake after a 220 to STARTTLS; throws on failure.
  void start_tls(const std::filesystem::path& ca_file, const std::string& server_name);
  // True when the server closed the connection (reads EOF).
  bool closed_by_server();

 private:
  std::string read_line();

  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  std::unique_ptr<asio::ssl::context> tls_context_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  std::string buffer_;
};

}  // namespace stsrelay::testing
