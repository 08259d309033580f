#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

#include "smtp/capabilities.hpp"
#include "smtp/delivery_status.hpp"
#include "tls/peer_check.hpp"

namespace stsrelay::smtp {

// What TLS an attempt demands of an MX host.
enum class TlsRequirement {
  // No policy, or mode none: STARTTLS when offered; the certificate is
  // checked and reported but not required; a failed handshake is retried
  // once on a new connection in plaintext.
  opportunistic,
  // MTA-STS enforce (and testing, which only logs what fails): STARTTLS
  // offered, TLS 1.2 or newer, a certificate that chains to the trust store
  // and names the MX host. Anything less fails this host with the RFC 8460
  // result type in DeliveryStatus::tls_result.
  validated,
};

struct ClientOptions {
  std::string helo_name;
  std::chrono::milliseconds connect_timeout{30000};
  std::chrono::milliseconds command_timeout{300000};  // per command, and per data write
  std::shared_ptr<asio::ssl::context> tls_context;    // from tls::make_client_context
};

struct TlsOutcome {
  bool used = false;
  std::string version;  // "TLSv1.3"
  std::string cipher;
  tls::PeerCheck certificate;  // meaningful when used
  // The handshake resumed a session of an earlier connection to this host
  // (same port, same requirement): no certificate was sent, and
  // `certificate` is the verdict recorded when that session was made.
  bool resumed = false;
  // Why TLS was not used although the server offered it (opportunistic only:
  // a failed handshake, then delivery in plaintext on a new connection).
  std::string failure;
};

// The envelope of one transaction; the content is the queue's (CRLF lines,
// not dot-stuffed).
struct Envelope {
  std::string sender;  // empty for the null reverse-path
  std::vector<std::string> recipients;
  std::uint64_t size = 0;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
};

// One SMTP connection to one address of one MX host, over Asio coroutines.
// Every read and write is bounded (connect_timeout, command_timeout).
class SmtpConnection {
 public:
  // Connects, reads the greeting, EHLO (HELO when EHLO is refused), STARTTLS
  // as `requirement` asks. On failure the status says why (usually
  // try_next_mx; tls_result set for TLS failures).
  static asio::awaitable<tl::expected<std::unique_ptr<SmtpConnection>, DeliveryStatus>> open(
      std::string host, asio::ip::address address, std::uint16_t port, TlsRequirement requirement,
      ClientOptions options);

  ~SmtpConnection();

  const std::string& host() const;
  const asio::ip::address& address() const;
  const TlsOutcome& tls() const;
  const Capabilities& capabilities() const;

  // One mail transaction: MAIL, RCPT for each recipient, DATA, the content,
  // pipelined when the server offers PIPELINING. One status per recipient,
  // in envelope order. Checked before anything is sent: a size over the
  // server's SIZE limit bounces (5.3.4), a message needing SMTPUTF8 to a
  // server without it bounces (5.6.7).
  asio::awaitable<std::vector<DeliveryStatus>> send(const Envelope& envelope,
                                                    std::string_view content);

  // Whether another transaction can use this connection.
  bool usable() const;
  std::chrono::steady_clock::time_point opened_at() const;
  // RSET: whether the connection is still good for a transaction, e.g. after
  // it sat idle and the server may have timed it out.
  asio::awaitable<bool> reset();
  // QUIT and close; bounded by command_timeout.
  asio::awaitable<void> quit();

 private:
  struct Impl;
  explicit SmtpConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::smtp
