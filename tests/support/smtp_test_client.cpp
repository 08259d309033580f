#include "tests/support/smtp_test_client.hpp"

#include <stdexcept>

#include <asio/connect.hpp>
#include <asio/read.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/write.hpp>

namespace stsrelay::testing {

bool SmtpTestClient::Reply::has_line(std::string_view text) const {
  for (const auto& line : lines) {
    if (line == text) {
      return true;
    }
  }
  return false;
}

SmtpTestClient::SmtpTestClient(const asio::ip::tcp::endpoint& server,
                               std::optional<asio::ip::address> local_address)
    : socket_(io_) {
  socket_.open(server.protocol());
  if (local_address) {
    socket_.bind(asio::ip::tcp::endpoint(*local_address, 0));
  }
  socket_.connect(server);
}

SmtpTestClient::~SmtpTestClient() = default;

void SmtpTestClient::send(std::string_view bytes) {
  if (tls_) {
    asio::write(*tls_, asio::buffer(bytes));
  } else {
    asio::write(socket_, asio::buffer(bytes));
  }
}

std::string SmtpTestClient::read_line() {
  for (;;) {
    auto end = buffer_.find("\r\n");
    if (end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      return line;
    }
    char chunk[4096];
    std::size_t length =
        tls_ ? tls_->read_some(asio::buffer(chunk)) : socket_.read_some(asio::buffer(chunk));
    buffer_.append(chunk, length);
  }
}

SmtpTestClient::Reply SmtpTestClient::read_reply() {
  Reply reply;
  for (;;) {
    std::string line = read_line();
    if (line.size() < 3) {
      throw std::runtime_error("malformed reply line: " + line);
    }
    reply.code = std::stoi(line.substr(0, 3));
    reply.lines.push_back(line.size() > 4 ? line.substr(4) : "");
    if (line.size() == 3 || line[3] == ' ') {
      return reply;
    }
  }
}

SmtpTestClient::Reply SmtpTestClient::command(std::string_view line) {
  send(std::string(line) + "\r\n");
  return read_reply();
}

void SmtpTestClient::start_tls(const std::filesystem::path& ca_file,
                               const std::string& server_name) {
  tls_context_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  tls_context_->load_verify_file(ca_file.string());
  tls_context_->set_verify_mode(asio::ssl::verify_peer);
  tls_context_->set_verify_callback(asio::ssl::host_name_verification(server_name));
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, *tls_context_);
  SSL_set_tlsext_host_name(tls_->native_handle(), server_name.c_str());
  tls_->handshake(asio::ssl::stream_base::client);
}

bool SmtpTestClient::closed_by_server() {
  char byte;
  std::error_code error;
  if (!buffer_.empty()) {
    return false;
  }
  if (tls_) {
    tls_->read_some(asio::buffer(&byte, 1), error);
  } else {
    socket_.read_some(asio::buffer(&byte, 1), error);
  }
  if (!error) {
    buffer_.push_back(byte);
    return false;
  }
  return true;
}

}  // namespace stsrelay::testing
