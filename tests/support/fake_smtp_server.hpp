#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>

namespace stsrelay::testing {

enum class FakeTlsVersion { tls1_1, tls1_2, tls1_3 };

// A scripted answer that replaces the server's own for matching commands.
struct FakeSmtpRule {
  // What it answers: a verb ("EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", ...),
  // "CONNECT" for the greeting, or "MESSAGE" for the reply after the data's
  // final dot. Case-insensitive.
  std::string command{};
  // Matches when the command's argument contains this (case-insensitive),
  // e.g. "<bad@example.test>"; empty matches every argument.
  std::string argument{};
  // Reply lines separated by "\n", sent with CRLF: "550 5.1.1 no such user",
  // "250-first\n250 last". A 2xx reply to RCPT accepts the recipient, to
  // DATA (a 354) starts the data, and so on: the server follows its own reply.
  std::string reply{};
  enum class Then {
    answer,            // send the reply and carry on
    answer_and_close,  // send the reply, then close the connection (e.g. 421)
    close,             // close the connection without a reply
    hang,              // never answer: read and discard until the client leaves
  };
  Then then = Then::answer;
  // Applies to this many matching commands (across sessions), then falls
  // through to later rules and the default. 0: always.
  int times = 0;
};

// What one DATA transaction carried.
struct FakeSmtpMessage {
  std::string sender;                        // the MAIL FROM address, without <>
  std::vector<std::string> mail_parameters;  // "SIZE=123", "BODY=8BITMIME", as sent
  std::vector<std::string> recipients;       // accepted RCPT TO addresses, without <>
  std::string data;                          // after dot-unstuffing, CRLFs as sent
  int reply_code = 0;                        // the reply to the final dot
};

// One connection as the server saw it.
struct FakeSmtpSession {
  std::string client_address;
  std::string ehlo_name;              // the last EHLO/HELO argument
  bool tls = false;                   // STARTTLS completed
  std::string tls_version;            // "TLSv1.3"
  std::string server_name;            // SNI sent by the client
  std::vector<std::string> commands;  // every command line received, in order, without CRLF
  // Per command: it was already received with the one before (in the same
  // read), as a pipelining client sends MAIL, RCPT and DATA (RFC 2920).
  std::vector<bool> arrived_with_previous;
  std::vector<FakeSmtpMessage> messages;  // every DATA transaction that got its final dot
  bool quit = false;                      // the client said QUIT
};

// An SMTP server for tests (a fake MX host) on one loopback address, in
// process on a thread of its own but on a real socket, so the stsrelay
// binary can deliver to it too. It speaks enough ESMTP for a sender:
// EHLO/HELO, STARTTLS, MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP, QUIT,
// with pipelined commands, the extensions named in Options, and scripted
// replies (FakeSmtpRule). It records everything it received. Every method
// may be called from any thread.
class FakeSmtpServer {
 public:
  struct Options {
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;  // 0: a free one, see port()
    std::string hostname = "mx.fake.test";
    // STARTTLS is offered when starttls is set; it then needs a certificate
    // chain and key (e.g. from TestCa::issue).
    bool starttls = false;
    std::filesystem::path cert_file{};
    std::filesystem::path key_file{};
    FakeTlsVersion tls_min = FakeTlsVersion::tls1_2;
    FakeTlsVersion tls_max = FakeTlsVersion::tls1_3;
    // Advertised EHLO extensions.
    bool pipelining = true;
    std::optional<std::size_t> size_limit{};  // "SIZE n"; larger messages get 552 5.3.4
    bool eightbitmime = true;
    bool smtputf8 = true;
    bool enhanced_status_codes = true;
    std::vector<std::string> extra_extensions{};  // more EHLO lines, e.g. "DSN"
    std::vector<FakeSmtpRule> rules{};
  };

  // Throws std::system_error when the address and port cannot be bound.
  explicit FakeSmtpServer(Options options);
  ~FakeSmtpServer();  // closes every connection, stops and joins
  FakeSmtpServer(const FakeSmtpServer&) = delete;
  FakeSmtpServer& operator=(const FakeSmtpServer&) = delete;

  const std::string& address() const;
  std::uint16_t port() const;
  asio::ip::tcp::endpoint endpoint() const;

  // Rules added later are consulted after the earlier ones.
  void add_rule(FakeSmtpRule rule);
  void clear_rules();

  std::vector<FakeSmtpSession> sessions() const;
  std::size_t connections() const;
  // The most connections that were open at the same time so far.
  std::size_t most_concurrent_connections() const;
  // The messages of every session whose final dot got a 2xx, in order.
  std::vector<FakeSmtpMessage> messages() const;
  // Waits until that many messages were accepted (not a sleep: it returns
  // as soon as they are); false when the timeout passed first.
  bool wait_for_messages(std::size_t count, std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Several fake MX hosts on one port (the relay uses one delivery.port for all
// of them), each on its own address: the port is picked for the first and
// reused for the others, starting over with a new port when one of the
// addresses has it taken already. Each Options' port is ignored.
std::vector<std::unique_ptr<FakeSmtpServer>> make_fake_smtp_servers(
    std::vector<FakeSmtpServer::Options> options);

}  // namespace stsrelay::testing
