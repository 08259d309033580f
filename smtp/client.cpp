#include "smtp/client.hpp"

#include <array>
#include <optional>
#include <utility>

#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/ssl.h>

#include "smtp/dot_stuffing.hpp"
#include "smtp/reply_parser.hpp"
#include "tls/session_resumption.hpp"

namespace stsrelay::smtp {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// The content goes out stuffed a piece at a time, each write bounded by
// command_timeout: a stuffed copy of the whole message is never made.
constexpr std::size_t content_chunk_size = 64 * 1024;

// What the connection and its deadline handler share. The handler may run
// after the connection (and the coroutine using it) is gone, so it holds
// this rather than borrowing from either.
struct SharedSocket {
  explicit SharedSocket(const asio::any_io_executor& executor) : socket(executor) {}
  tcp::socket socket;
  // Bumped by every arm and disarm: a handler of an earlier arm that was
  // already queued when its operation completed must not close the socket.
  std::uint64_t generation = 0;
  bool timed_out = false;
};

// Why opening failed, and whether an opportunistic sender should try the
// host again without STARTTLS.
struct OpenFailure {
  DeliveryStatus status;
  bool retry_in_plaintext = false;
};

tl::unexpected<OpenFailure> failed(DeliveryStatus status, bool retry_in_plaintext = false) {
  return tl::unexpected(OpenFailure{std::move(status), retry_in_plaintext});
}

bool has_line_break(std::string_view text) {
  return text.find_first_of("\r\n") != std::string_view::npos ||
         text.find('\0') != std::string_view::npos;
}

// RFC 8460 §4.3 has no result type for a TLS version or handshake failure:
// "validation-failure" is its catch-all.
constexpr std::string_view handshake_failure_type = "validation-failure";

}  // namespace

struct SmtpConnection::Impl {
  Impl(const asio::any_io_executor& executor, std::string host_name, asio::ip::address address_in,
       std::uint16_t port_in, ClientOptions options_in)
      : host(std::move(host_name)),
        address(address_in),
        port(port_in),
        options(std::move(options_in)),
        shared(std::make_shared<SharedSocket>(executor)),
        deadline(executor) {}

  ~Impl() { close(); }

  std::string host;
  asio::ip::address address;
  std::uint16_t port;
  ClientOptions options;
  std::shared_ptr<SharedSocket> shared;
  asio::steady_timer deadline;
  // Declared after `shared`: destroyed before the socket it refers to.
  std::optional<asio::ssl::stream<tcp::socket&>> tls_stream;
  ReplyParser parser;
  Capabilities capabilities;
  TlsOutcome tls;
  bool usable = false;
  std::string closed_reason;  // why usable is false, once it is
  std::chrono::steady_clock::time_point opened_at = std::chrono::steady_clock::now();
  std::array<char, 16 * 1024> buffer{};

  // ---- deadlines -------------------------------------------------------

  void arm(std::chrono::milliseconds timeout) {
    const std::uint64_t generation = ++shared->generation;
    shared->timed_out = false;
    deadline.expires_after(timeout);
    deadline.async_wait([shared = shared, generation](std::error_code error) {
      if (!error && shared->generation == generation) {
        shared->timed_out = true;
        std::error_code ignored;
        shared->socket.close(ignored);
      }
    });
  }

  void disarm() {
    ++shared->generation;
    deadline.cancel();
  }

  void close() {
    usable = false;
    ++shared->generation;
    deadline.cancel();
    std::error_code ignored;
    shared->socket.shutdown(tcp::socket::shutdown_both, ignored);
    shared->socket.close(ignored);
  }

  std::string failure_text(const std::error_code& error, std::chrono::milliseconds timeout,
                           const std::string& during) const {
    if (shared->timed_out) {
      return "timed out after " + std::to_string(timeout.count()) + " ms " + during;
    }
    if (error == asio::error::eof || error == asio::ssl::error::stream_truncated) {
      return "connection closed by " + host + " " + during;
    }
    return "connection to " + host + " lost " + during + ": " + error.message();
  }

  void lose(std::string reason) {
    usable = false;
    if (closed_reason.empty()) {
      closed_reason = std::move(reason);
    }
  }

  // ---- bytes -----------------------------------------------------------

  // `bytes` and `what` must outlive the call (named locals, literals): g++ 12
  // mishandles temporaries with destructors in an awaited call.
  asio::awaitable<tl::expected<void, std::string>> write(std::string_view bytes,
                                                         std::string_view what) {
    if (!shared->socket.is_open()) {
      co_return tl::unexpected("cannot send " + std::string(what) + ": " + closed_reason);
    }
    arm(options.command_timeout);
    std::error_code error;
    if (tls_stream) {
      std::tie(error, std::ignore) =
          co_await asio::async_write(*tls_stream, asio::buffer(bytes), use_tuple);
    } else {
      std::tie(error, std::ignore) =
          co_await asio::async_write(shared->socket, asio::buffer(bytes), use_tuple);
    }
    disarm();
    if (error) {
      std::string text =
          failure_text(error, options.command_timeout, "sending " + std::string(what));
      lose(text);
      co_return tl::unexpected(std::move(text));
    }
    co_return tl::expected<void, std::string>{};
  }

  asio::awaitable<tl::expected<Reply, std::string>> read_reply(std::string_view what) {
    arm(options.command_timeout);
    for (;;) {
      if (auto next = parser.next()) {
        disarm();
        if (!*next) {
          std::string text =
              "unreadable reply from " + host + " to " + std::string(what) + ": " + next->error();
          lose(text);
          close();
          co_return tl::unexpected(std::move(text));
        }
        if ((*next)->code == 421) {
          // RFC 5321 §3.8: the server is closing the transmission channel.
          lose(host + " is closing the connection (421)");
        }
        co_return std::move(**next);
      }
      std::error_code error;
      std::size_t length = 0;
      if (tls_stream) {
        std::tie(error, length) =
            co_await tls_stream->async_read_some(asio::buffer(buffer), use_tuple);
      } else {
        std::tie(error, length) =
            co_await shared->socket.async_read_some(asio::buffer(buffer), use_tuple);
      }
      if (error) {
        disarm();
        std::string text = failure_text(error, options.command_timeout,
                                        "waiting for the reply to " + std::string(what));
        lose(text);
        close();
        co_return tl::unexpected(std::move(text));
      }
      parser.append(std::string_view(buffer.data(), length));
    }
  }

  // One command line and its reply; `what` names it in errors ("MAIL").
  asio::awaitable<tl::expected<Reply, std::string>> command(std::string_view line,
                                                            std::string_view what) {
    std::string bytes(line);
    bytes += "\r\n";
    auto written = co_await write(bytes, what);
    if (!written) {
      co_return tl::unexpected(written.error());
    }
    auto reply = co_await read_reply(what);
    co_return reply;
  }

  // ---- opening ---------------------------------------------------------

  // EHLO, or HELO when the server refuses EHLO permanently (RFC 5321
  // §3.2: a server that does not know EHLO answers 500 or 502).
  asio::awaitable<tl::expected<void, DeliveryStatus>> hello() {
    const std::string ehlo_line = "EHLO " + options.helo_name;
    auto ehlo = co_await command(ehlo_line, "EHLO");
    if (!ehlo) {
      co_return tl::unexpected(classify_local_failure(Stage::ehlo, ehlo.error(), host));
    }
    if (ehlo->code == 250) {
      capabilities = parse_capabilities(*ehlo);
      co_return tl::expected<void, DeliveryStatus>{};
    }
    if (ehlo->code / 100 != 5 || !usable) {
      co_return tl::unexpected(classify_reply(Stage::ehlo, *ehlo, host));
    }
    capabilities = Capabilities{};
    const std::string helo_line = "HELO " + options.helo_name;
    auto helo = co_await command(helo_line, "HELO");
    if (!helo) {
      co_return tl::unexpected(classify_local_failure(Stage::ehlo, helo.error(), host));
    }
    if (helo->code != 250) {
      co_return tl::unexpected(classify_reply(Stage::ehlo, *helo, host));
    }
    co_return tl::expected<void, DeliveryStatus>{};
  }

  // STARTTLS, the handshake, the certificate verdict, EHLO again. A
  // validated requirement fails the host on anything less than TLS 1.2 with
  // a certificate valid for it; opportunistic TLS takes what it gets and
  // asks for a plaintext retry when the handshake itself fails.
  asio::awaitable<tl::expected<void, OpenFailure>> start_tls(TlsRequirement requirement) {
    const bool validated = requirement == TlsRequirement::validated;
    auto ready = co_await command("STARTTLS", "STARTTLS");
    if (!ready) {
      if (validated) {
        co_return failed(
            classify_local_failure(Stage::starttls, ready.error(), host, "starttls-not-supported"));
      }
      co_return failed(classify_local_failure(Stage::starttls, ready.error(), host), true);
    }
    if (ready->code != 220) {
      DeliveryStatus refused = classify_reply(Stage::starttls, *ready, host);
      if (validated) {
        refused.tls_result = "starttls-not-supported";
        co_return failed(std::move(refused));
      }
      if (!usable) {
        co_return failed(std::move(refused));
      }
      // Opportunistic: the session is as it was before STARTTLS (RFC 3207
      // §4), so it goes on in plaintext.
      tls.failure = "STARTTLS refused: " + refused.diagnostic();
      co_return tl::expected<void, OpenFailure>{};
    }
    if (parser.buffered() > 0) {
      // Bytes after the 220 would be read as if they came over TLS: an
      // injection attempt or a broken server (RFC 3207 §4.2).
      std::string text = host + " sent data after its 220 to STARTTLS";
      close();
      co_return failed(
          classify_local_failure(Stage::starttls, text, host,
                                 validated ? std::string(handshake_failure_type) : std::string()),
          !validated);
    }

    tls_stream.emplace(shared->socket, *options.tls_context);
    SSL* ssl = tls_stream->native_handle();
    // The context should already refuse anything older (tls::make_client_context);
    // this connection does not depend on it.
    if (validated) {
      SSL_set_min_proto_version(ssl, TLS1_2_VERSION);
    }
    if (!tls::prepare_client(ssl, host)) {
      std::string text = "cannot prepare the TLS connection to " + host;
      close();
      co_return failed(
          classify_local_failure(Stage::starttls, text, host,
                                 validated ? std::string(handshake_failure_type) : std::string()),
          !validated);
    }
    // A session is only offered to a connection under the same requirement
    // it was made under: one that opportunistic TLS accepted with a bad
    // certificate never resumes for MTA-STS.
    tls::offer_session(ssl, tls::SessionKey{host, port, validated});
    arm(options.command_timeout);
    auto [error] = co_await tls_stream->async_handshake(asio::ssl::stream_base::client, use_tuple);
    disarm();
    if (error) {
      std::string text = shared->timed_out
                             ? "TLS handshake with " + host + " timed out after " +
                                   std::to_string(options.command_timeout.count()) + " ms"
                             : "TLS handshake with " + host + " failed: " + error.message();
      lose(text);
      close();
      co_return failed(
          classify_local_failure(Stage::starttls, text, host,
                                 validated ? std::string(handshake_failure_type) : std::string()),
          !validated);
    }
    tls.used = true;
    tls.version = tls::protocol_version(ssl);
    tls.cipher = tls::cipher_name(ssl);
    tls.resumed = tls::resumed(ssl);
    tls.certificate = tls::established_verdict(ssl, host);
    if (validated) {
      if (SSL_version(ssl) < TLS1_2_VERSION) {
        std::string text = host + " negotiated " + tls.version + ", below TLS 1.2";
        close();
        co_return failed(classify_local_failure(Stage::starttls, text, host,
                                                std::string(handshake_failure_type)));
      }
      if (tls.certificate.verdict != tls::CertificateVerdict::valid) {
        std::string text = tls.certificate.detail.empty()
                               ? "the certificate of " + host + " does not validate"
                               : tls.certificate.detail;
        close();
        co_return failed(
            classify_local_failure(Stage::starttls, text, host,
                                   std::string(tls::rfc8460_result_type(tls.certificate.verdict))));
      }
    }
    // Good enough for its requirement: later connections may resume it.
    tls::keep_sessions(ssl, tls.certificate);
    // RFC 3207 §4.2: what was learnt before TLS is forgotten.
    capabilities = Capabilities{};
    auto again = co_await hello();
    if (!again) {
      co_return failed(std::move(again.error()));
    }
    co_return tl::expected<void, OpenFailure>{};
  }

  // One connection: connect, greeting, EHLO, STARTTLS if allowed and offered.
  static asio::awaitable<tl::expected<std::unique_ptr<Impl>, OpenFailure>> establish(
      asio::any_io_executor executor, std::string host, asio::ip::address address,
      std::uint16_t port, TlsRequirement requirement, ClientOptions options, bool allow_starttls) {
    auto impl =
        std::make_unique<Impl>(executor, std::move(host), address, port, std::move(options));
    const std::string& name = impl->host;

    impl->arm(impl->options.connect_timeout);
    auto [connect_error] =
        co_await impl->shared->socket.async_connect(tcp::endpoint(address, port), use_tuple);
    impl->disarm();
    if (connect_error) {
      std::string text = "cannot connect to " + name + " [" + address.to_string() +
                         "]:" + std::to_string(port) + ": ";
      text +=
          impl->shared->timed_out
              ? "timed out after " + std::to_string(impl->options.connect_timeout.count()) + " ms"
              : connect_error.message();
      co_return failed(classify_local_failure(Stage::connect, std::move(text), name));
    }
    impl->usable = true;

    auto greeting = co_await impl->read_reply("the greeting");
    if (!greeting) {
      co_return failed(classify_local_failure(Stage::greeting, greeting.error(), name));
    }
    if (greeting->code != 220) {
      DeliveryStatus refused = classify_reply(Stage::greeting, *greeting, name);
      co_await impl->farewell();
      co_return failed(std::move(refused));
    }

    auto hello = co_await impl->hello();
    if (!hello) {
      co_await impl->farewell();
      co_return failed(std::move(hello.error()));
    }

    if (requirement == TlsRequirement::validated && !impl->capabilities.starttls) {
      std::string text = name + " does not offer STARTTLS";
      co_await impl->farewell();
      co_return failed(
          classify_local_failure(Stage::starttls, std::move(text), name, "starttls-not-supported"));
    }
    if (allow_starttls && impl->capabilities.starttls) {
      if (!impl->options.tls_context) {
        co_return failed(classify_local_failure(Stage::starttls, "no TLS client context", name));
      }
      auto started = co_await impl->start_tls(requirement);
      if (!started) {
        co_return tl::unexpected(std::move(started.error()));
      }
    }
    co_return std::move(impl);
  }

  // QUIT when the connection still allows it, then close.
  asio::awaitable<void> farewell() {
    if (usable) {
      auto reply = co_await command("QUIT", "QUIT");
      (void)reply;  // whatever it says, the session is over
    }
    close();
  }

  // ---- a transaction ---------------------------------------------------

  asio::awaitable<tl::expected<void, std::string>> reset() {
    auto reply = co_await command("RSET", "RSET");
    if (!reply) {
      co_return tl::unexpected(reply.error());
    }
    if (reply->code != 250) {
      // A session out of step: safer to start the next message afresh.
      lose(host + " answered RSET with " + std::to_string(reply->code));
      close();
    }
    co_return tl::expected<void, std::string>{};
  }

  asio::awaitable<std::vector<DeliveryStatus>> transaction(Envelope envelope,
                                                           std::string_view content);
};

namespace {

// The per-recipient outcome being filled in during a transaction.
class Outcomes {
 public:
  explicit Outcomes(std::size_t count) : statuses_(count) {}

  void set(std::size_t index, DeliveryStatus status) { statuses_[index] = std::move(status); }
  bool decided(std::size_t index) const { return statuses_[index].has_value(); }

  // Every recipient not decided yet.
  void rest(const DeliveryStatus& status) {
    for (auto& slot : statuses_) {
      if (!slot) {
        slot = status;
      }
    }
  }

  bool all_decided() const {
    for (const auto& slot : statuses_) {
      if (!slot) {
        return false;
      }
    }
    return true;
  }

  std::vector<DeliveryStatus> take() {
    std::vector<DeliveryStatus> result;
    result.reserve(statuses_.size());
    for (auto& slot : statuses_) {
      result.push_back(std::move(*slot));
    }
    return result;
  }

 private:
  std::vector<std::optional<DeliveryStatus>> statuses_;
};

}  // namespace

asio::awaitable<std::vector<DeliveryStatus>> SmtpConnection::Impl::transaction(
    Envelope envelope, std::string_view content) {
  const std::size_t count = envelope.recipients.size();
  Outcomes outcomes(count);
  if (count == 0) {
    co_return outcomes.take();
  }
  if (!usable) {
    std::string text = "the connection to " + host + " cannot be used: " +
                       (closed_reason.empty() ? std::string("closed") : closed_reason);
    outcomes.rest(classify_local_failure(Stage::mail, std::move(text), host));
    co_return outcomes.take();
  }

  // ---- before anything is sent ----
  const std::uint64_t size = envelope.size > 0 ? envelope.size : content.size();
  if (capabilities.size_limit && size > *capabilities.size_limit) {
    outcomes.rest(make_local_bounce(Stage::mail, "5.3.4",
                                    "message of " + std::to_string(size) + " octets exceeds the " +
                                        std::to_string(*capabilities.size_limit) + " octets " +
                                        host + " accepts",
                                    host));
    co_return outcomes.take();
  }
  if (envelope.smtputf8 && !capabilities.smtputf8) {
    outcomes.rest(make_local_bounce(
        Stage::mail, "5.6.7",
        "the message needs SMTPUTF8 (RFC 6531), which " + host + " does not offer", host));
    co_return outcomes.take();
  }
  if (has_line_break(envelope.sender)) {
    outcomes.rest(
        make_local_bounce(Stage::mail, "5.1.7", "the sender address contains a line break", host));
    co_return outcomes.take();
  }
  std::vector<std::size_t> to_send;  // indexes of recipients that get a RCPT
  for (std::size_t i = 0; i < count; ++i) {
    if (has_line_break(envelope.recipients[i])) {
      outcomes.set(i, make_local_bounce(Stage::rcpt, "5.1.3",
                                        "the recipient address contains a line break", host));
    } else {
      to_send.push_back(i);
    }
  }
  if (to_send.empty()) {
    co_return outcomes.take();
  }

  std::string mail = "MAIL FROM:<" + envelope.sender + ">";
  if (capabilities.size) {
    mail += " SIZE=" + std::to_string(size);
  }
  // Without 8BITMIME at the server the message goes as it is, as Exim and
  // Sendmail send it: most servers take 8-bit content regardless. Postfix
  // re-encodes MIME parts as quoted-printable instead (RFC 6152 §3); this
  // relay does not do that conversion yet.
  if (envelope.eight_bit_mime && capabilities.eight_bit_mime) {
    mail += " BODY=8BITMIME";
  }
  if (envelope.smtputf8) {
    mail += " SMTPUTF8";
  }

  std::vector<std::size_t> accepted;
  std::optional<Reply> data_reply;

  if (capabilities.pipelining) {
    // RFC 2920 §3.1: MAIL, every RCPT and DATA in one write, then the
    // replies in order.
    std::string batch = mail + "\r\n";
    for (std::size_t index : to_send) {
      batch += "RCPT TO:<" + envelope.recipients[index] + ">\r\n";
    }
    batch += "DATA\r\n";
    auto written = co_await write(batch, "MAIL, RCPT and DATA");
    if (!written) {
      outcomes.rest(classify_local_failure(Stage::mail, written.error(), host));
      co_return outcomes.take();
    }
    auto mail_reply = co_await read_reply("MAIL");
    if (!mail_reply) {
      outcomes.rest(classify_local_failure(Stage::mail, mail_reply.error(), host));
      co_return outcomes.take();
    }
    const DeliveryStatus mail_status = classify_reply(Stage::mail, *mail_reply, host);
    const bool mail_accepted = mail_status.disposition == Disposition::delivered;
    for (std::size_t index : to_send) {
      auto rcpt_reply = co_await read_reply("RCPT");
      if (!rcpt_reply) {
        outcomes.rest(mail_accepted ? classify_local_failure(Stage::rcpt, rcpt_reply.error(), host)
                                    : mail_status);
        co_return outcomes.take();
      }
      if (!mail_accepted) {
        continue;  // 503s: MAIL's reply says it all
      }
      DeliveryStatus status = classify_reply(Stage::rcpt, *rcpt_reply, host);
      if (status.disposition == Disposition::delivered) {
        accepted.push_back(index);
      } else {
        outcomes.set(index, std::move(status));
      }
    }
    auto data = co_await read_reply("DATA");
    if (!data) {
      outcomes.rest(mail_accepted ? classify_local_failure(Stage::data, data.error(), host)
                                  : mail_status);
      co_return outcomes.take();
    }
    if (!mail_accepted || accepted.empty()) {
      if (!mail_accepted) {
        outcomes.rest(mail_status);
      }
      if (data->code == 354) {
        // RFC 2920 §3.1: a server that accepted DATA without a recipient
        // gets the end of an empty message, and rejects it.
        auto ended = co_await write(".\r\n", "the end of data");
        if (ended) {
          auto ignored = co_await read_reply("the end of data");
          (void)ignored;
        }
      } else if (mail_accepted && usable) {
        auto ignored = co_await reset();
        (void)ignored;
      }
      co_return outcomes.take();
    }
    data_reply = std::move(*data);
  } else {
    auto mail_reply = co_await command(mail, "MAIL");
    if (!mail_reply) {
      outcomes.rest(classify_local_failure(Stage::mail, mail_reply.error(), host));
      co_return outcomes.take();
    }
    DeliveryStatus mail_status = classify_reply(Stage::mail, *mail_reply, host);
    if (mail_status.disposition != Disposition::delivered) {
      outcomes.rest(mail_status);
      co_return outcomes.take();
    }
    for (std::size_t index : to_send) {
      const std::string rcpt = "RCPT TO:<" + envelope.recipients[index] + ">";
      auto rcpt_reply = co_await command(rcpt, "RCPT");
      if (!rcpt_reply) {
        outcomes.rest(classify_local_failure(Stage::rcpt, rcpt_reply.error(), host));
        co_return outcomes.take();
      }
      DeliveryStatus status = classify_reply(Stage::rcpt, *rcpt_reply, host);
      if (status.disposition == Disposition::delivered) {
        accepted.push_back(index);
        continue;
      }
      outcomes.set(index, status);
      if (!usable) {
        // 421: the rest share its fate.
        outcomes.rest(status);
        co_return outcomes.take();
      }
    }
    if (accepted.empty()) {
      auto ignored = co_await reset();
      (void)ignored;
      co_return outcomes.take();
    }
    auto data = co_await command("DATA", "DATA");
    if (!data) {
      outcomes.rest(classify_local_failure(Stage::data, data.error(), host));
      co_return outcomes.take();
    }
    data_reply = std::move(*data);
  }

  // ---- DATA's answer, then the content ----
  if (data_reply->code != 354) {
    outcomes.rest(classify_reply(Stage::data, *data_reply, host));
    if (usable) {
      auto ignored = co_await reset();
      (void)ignored;
    }
    co_return outcomes.take();
  }
  DotStuffer stuffer;
  std::string chunk;
  std::size_t offset = 0;
  do {
    const std::string_view piece = content.substr(offset, content_chunk_size);
    offset += piece.size();
    chunk.clear();
    stuffer.feed(piece, chunk);
    if (offset >= content.size()) {
      stuffer.finish(chunk);
    }
    auto written = co_await write(chunk, "the message content");
    if (!written) {
      outcomes.rest(classify_local_failure(Stage::message, written.error(), host));
      co_return outcomes.take();
    }
  } while (offset < content.size());

  auto final_reply = co_await read_reply("the end of data");
  if (!final_reply) {
    // The whole message and its final dot went out: the server may have
    // taken it and failed before answering (RFC 1047). Another attempt can
    // deliver it twice, which beats losing it.
    outcomes.rest(classify_local_failure(
        Stage::message,
        final_reply.error() + " (the end of data was sent: the message may have been delivered)",
        host));
    co_return outcomes.take();
  }
  outcomes.rest(classify_reply(Stage::message, *final_reply, host));
  co_return outcomes.take();
}

SmtpConnection::SmtpConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SmtpConnection::~SmtpConnection() = default;

asio::awaitable<tl::expected<std::unique_ptr<SmtpConnection>, DeliveryStatus>> SmtpConnection::open(
    std::string host, asio::ip::address address, std::uint16_t port, TlsRequirement requirement,
    ClientOptions options) {
  auto executor = co_await asio::this_coro::executor;
  auto first = co_await Impl::establish(executor, host, address, port, requirement, options, true);
  if (first) {
    co_return std::unique_ptr<SmtpConnection>(new SmtpConnection(std::move(*first)));
  }
  if (requirement != TlsRequirement::opportunistic || !first.error().retry_in_plaintext) {
    co_return tl::unexpected(std::move(first.error().status));
  }
  // Opportunistic TLS that failed: once more, in plaintext.
  std::string reason = first.error().status.text;
  auto second = co_await Impl::establish(executor, std::move(host), address, port, requirement,
                                         std::move(options), false);
  if (!second) {
    co_return tl::unexpected(std::move(second.error().status));
  }
  (*second)->tls.failure = std::move(reason);
  co_return std::unique_ptr<SmtpConnection>(new SmtpConnection(std::move(*second)));
}

const std::string& SmtpConnection::host() const {
  return impl_->host;
}

const asio::ip::address& SmtpConnection::address() const {
  return impl_->address;
}

const TlsOutcome& SmtpConnection::tls() const {
  return impl_->tls;
}

const Capabilities& SmtpConnection::capabilities() const {
  return impl_->capabilities;
}

asio::awaitable<std::vector<DeliveryStatus>> SmtpConnection::send(const Envelope& envelope,
                                                                  std::string_view content) {
  // A copy: the transaction must not depend on the caller's envelope.
  Envelope copy = envelope;
  co_return co_await impl_->transaction(std::move(copy), content);
}

bool SmtpConnection::usable() const {
  return impl_->usable;
}

std::chrono::steady_clock::time_point SmtpConnection::opened_at() const {
  return impl_->opened_at;
}

asio::awaitable<bool> SmtpConnection::reset() {
  if (!impl_->usable) {
    co_return false;
  }
  auto answered = co_await impl_->reset();
  co_return answered.has_value() && impl_->usable;
}

asio::awaitable<void> SmtpConnection::quit() {
  co_await impl_->farewell();
}

}  // namespace stsrelay::smtp
