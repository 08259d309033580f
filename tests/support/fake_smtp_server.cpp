#include "tests/support/fake_smtp_server.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/ssl.h>

namespace stsrelay::testing {

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
// A client that sends this much without a line end is not speaking SMTP.
constexpr std::size_t max_line_bytes = 1024 * 1024;

char upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

std::string to_upper(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(), upper);
  return result;
}

bool contains_ignoring_case(std::string_view haystack, std::string_view needle) {
  return to_upper(haystack).find(to_upper(needle)) != std::string::npos;
}

int openssl_version(FakeTlsVersion version) {
  switch (version) {
    case FakeTlsVersion::tls1_1:
      return TLS1_1_VERSION;
    case FakeTlsVersion::tls1_2:
      return TLS1_2_VERSION;
    case FakeTlsVersion::tls1_3:
      return TLS1_3_VERSION;
  }
  return 0;
}

// "250-a\n250 b" -> "250-a\r\n250 b\r\n"
std::string wire(std::string_view reply) {
  std::string out;
  while (!reply.empty()) {
    std::size_t end = reply.find('\n');
    std::string_view line = reply.substr(0, end);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    out.append(line);
    out += "\r\n";
    reply.remove_prefix(end == std::string_view::npos ? reply.size() : end + 1);
  }
  return out;
}

int reply_code(std::string_view reply) {
  if (reply.size() < 3 ||
      !std::all_of(reply.begin(), reply.begin() + 3, [](char c) { return c >= '0' && c <= '9'; })) {
    return 0;
  }
  return (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
}

// "FROM:<a@b> SIZE=10" with prefix "FROM:" -> address "a@b", parameters {"SIZE=10"}.
bool parse_path(std::string_view argument, std::string_view prefix, std::string& address,
                std::vector<std::string>& parameters) {
  if (argument.size() < prefix.size() || to_upper(argument.substr(0, prefix.size())) != prefix) {
    return false;
  }
  argument.remove_prefix(prefix.size());
  while (!argument.empty() && argument.front() == ' ') {
    argument.remove_prefix(1);
  }
  std::size_t close = argument.find('>');
  if (argument.empty() || argument.front() != '<' || close == std::string_view::npos) {
    return false;
  }
  address = std::string(argument.substr(1, close - 1));
  argument.remove_prefix(close + 1);
  while (!argument.empty()) {
    std::size_t start = argument.find_first_not_of(' ');
    if (start == std::string_view::npos) {
      break;
    }
    argument.remove_prefix(start);
    std::size_t end = argument.find(' ');
    parameters.emplace_back(argument.substr(0, end));
    argument.remove_prefix(end == std::string_view::npos ? argument.size() : end);
  }
  return true;
}

// A connection that may switch to TLS midway, read by lines.
class Connection {
 public:
  explicit Connection(tcp::socket& socket) : socket_(socket) {}

  // The next line with its line end; nothing at the end of the connection.
  asio::awaitable<std::optional<std::string>> read_line() {
    line_was_buffered_ = true;
    for (;;) {
      if (std::size_t end = buffer_.find('\n'); end != std::string::npos) {
        std::string line = buffer_.substr(0, end + 1);
        buffer_.erase(0, end + 1);
        co_return line;
      }
      if (buffer_.size() > max_line_bytes) {
        co_return std::nullopt;
      }
      line_was_buffered_ = false;
      std::array<char, 4096> chunk;
      std::error_code error;
      std::size_t length = 0;
      if (tls_) {
        std::tie(error, length) = co_await tls_->async_read_some(asio::buffer(chunk), use_tuple);
      } else {
        std::tie(error, length) = co_await socket_.async_read_some(asio::buffer(chunk), use_tuple);
      }
      if (error) {
        co_return std::nullopt;
      }
      buffer_.append(chunk.data(), length);
    }
  }

  asio::awaitable<bool> write(std::string bytes) {
    std::error_code error;
    if (tls_) {
      std::tie(error, std::ignore) =
          co_await asio::async_write(*tls_, asio::buffer(bytes), use_tuple);
    } else {
      std::tie(error, std::ignore) =
          co_await asio::async_write(socket_, asio::buffer(bytes), use_tuple);
    }
    co_return !error;
  }

  asio::awaitable<bool> start_tls(asio::ssl::context& context) {
    // RFC 3207 §4.2: whatever the client pipelined after STARTTLS is discarded.
    buffer_.clear();
    tls_.emplace(socket_, context);
    auto [error] = co_await tls_->async_handshake(asio::ssl::stream_base::server, use_tuple);
    co_return !error;
  }

  SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }

  // Whether the last line read had arrived before it was asked for.
  bool line_was_buffered() const { return line_was_buffered_; }

  // Reads and discards until the client goes away.
  asio::awaitable<void> drain() {
    for (;;) {
      auto line = co_await read_line();
      if (!line) {
        co_return;
      }
    }
  }

 private:
  tcp::socket& socket_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  std::string buffer_;
  bool line_was_buffered_ = false;
};

}  // namespace

struct FakeSmtpServer::Impl {
  asio::io_context io;
  std::optional<asio::ssl::context> tls;
  tcp::acceptor acceptor{io};
  Options options;
  std::uint16_t port = 0;

  mutable std::mutex mutex;
  mutable std::condition_variable message_accepted;
  struct ScriptedRule {
    FakeSmtpRule rule;
    int used = 0;
  };
  std::vector<ScriptedRule> rules;
  std::vector<FakeSmtpSession> sessions;
  std::size_t accepted_messages = 0;
  std::size_t open_sessions = 0;
  std::size_t most_open_sessions = 0;

  std::thread thread;

  std::optional<FakeSmtpRule> rule_for(const std::string& verb, std::string_view argument) {
    std::lock_guard lock(mutex);
    for (auto& scripted : rules) {
      const FakeSmtpRule& rule = scripted.rule;
      if (to_upper(rule.command) != verb || !contains_ignoring_case(argument, rule.argument)) {
        continue;
      }
      if (rule.times > 0 && scripted.used >= rule.times) {
        continue;
      }
      ++scripted.used;
      return rule;
    }
    return std::nullopt;
  }

  template <typename Change>
  void update(std::size_t session, Change change) {
    std::lock_guard lock(mutex);
    change(sessions[session]);
  }

  // The server's own replies say "2.1.0" and the like only when it
  // advertises ENHANCEDSTATUSCODES.
  std::string status(std::string reply) const {
    if (!options.enhanced_status_codes && reply.size() > 4) {
      std::size_t space = reply.find(' ', 4);
      if (space != std::string::npos && reply[4] == reply[0] && reply[5] == '.') {
        reply.erase(4, space - 3);
      }
    }
    return reply;
  }

  std::string ehlo_reply(bool in_tls) const {
    std::vector<std::string> lines{options.hostname + " greets you"};
    if (options.pipelining) {
      lines.emplace_back("PIPELINING");
    }
    if (options.size_limit) {
      lines.push_back("SIZE " + std::to_string(*options.size_limit));
    }
    if (options.eightbitmime) {
      lines.emplace_back("8BITMIME");
    }
    if (options.smtputf8) {
      lines.emplace_back("SMTPUTF8");
    }
    if (options.enhanced_status_codes) {
      lines.emplace_back("ENHANCEDSTATUSCODES");
    }
    if (options.starttls && !in_tls) {
      lines.emplace_back("STARTTLS");
    }
    lines.insert(lines.end(), options.extra_extensions.begin(), options.extra_extensions.end());
    std::string reply;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      reply += (i + 1 == lines.size() ? "250 " : "250-") + lines[i] + "\n";
    }
    return reply;
  }

  static asio::awaitable<void> accept_loop(Impl* self) {
    for (;;) {
      auto [error, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (error) {
        if (error == asio::error::operation_aborted || !self->acceptor.is_open()) {
          co_return;
        }
        continue;
      }
      std::size_t index = 0;
      {
        std::lock_guard lock(self->mutex);
        index = self->sessions.size();
        FakeSmtpSession session;
        std::error_code ignored;
        session.client_address = socket.remote_endpoint(ignored).address().to_string();
        self->sessions.push_back(std::move(session));
      }
      asio::co_spawn(self->io, serve(self, std::move(socket), index), asio::detached);
    }
  }

  // What the server does about one command: a rule's reply, else its own.
  struct Answer {
    std::string reply;  // empty when nothing is sent
    FakeSmtpRule::Then then = FakeSmtpRule::Then::answer;
    int code() const { return reply_code(reply); }
    bool positive() const { return code() / 100 == 2 || code() / 100 == 3; }
  };

  Answer choose(const std::string& verb, std::string_view argument, std::string own_reply) {
    auto rule = rule_for(verb, argument);
    if (!rule) {
      return {status(std::move(own_reply)), FakeSmtpRule::Then::answer};
    }
    if (rule->then == FakeSmtpRule::Then::close || rule->then == FakeSmtpRule::Then::hang) {
      return {"", rule->then};
    }
    return {rule->reply, rule->then};
  }

  // Sends the answer (after it was recorded, so that a client that has the
  // reply finds it in sessions()); false when the connection is to end.
  static asio::awaitable<bool> send(Connection& connection, Answer answer) {
    if (answer.then == FakeSmtpRule::Then::hang) {
      co_await connection.drain();
      co_return false;
    }
    if (answer.then == FakeSmtpRule::Then::close) {
      co_return false;
    }
    // g++ 12 destroys a temporary argument of a coroutine twice: name it.
    std::string bytes = wire(answer.reply);
    bool written = co_await connection.write(std::move(bytes));
    co_return written&& answer.then == FakeSmtpRule::Then::answer;
  }

  static asio::awaitable<void> serve(Impl* self, tcp::socket socket, std::size_t index) {
    {
      std::lock_guard lock(self->mutex);
      self->most_open_sessions = std::max(self->most_open_sessions, ++self->open_sessions);
    }
    co_await converse(self, socket, index);
    {
      // Counted as over before the socket closes: a client that saw the
      // connection end must find it no longer open.
      std::lock_guard lock(self->mutex);
      --self->open_sessions;
    }
    std::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  std::string own_reply(const std::string& verb, const std::string& argument, bool greeted,
                        bool in_tls, const std::optional<FakeSmtpMessage>& transaction) const {
    if (verb == "EHLO") {
      return ehlo_reply(in_tls);
    }
    if (verb == "HELO") {
      return "250 " + options.hostname;
    }
    if (verb == "STARTTLS") {
      return !options.starttls ? "502 5.5.1 STARTTLS not offered"
             : in_tls          ? "503 5.5.1 TLS already active"
             : !greeted        ? "503 5.5.1 EHLO first"
                               : "220 2.0.0 ready to start TLS";
    }
    if (verb == "MAIL") {
      std::string address;
      std::vector<std::string> parameters;
      const bool parsed = parse_path(argument, "FROM:", address, parameters);
      std::size_t declared_size = 0;
      for (const auto& parameter : parameters) {
        if (to_upper(parameter).starts_with("SIZE=")) {
          declared_size = std::strtoull(parameter.c_str() + 5, nullptr, 10);
        }
      }
      return !greeted      ? "503 5.5.1 EHLO first"
             : transaction ? "503 5.5.1 nested MAIL"
             : !parsed     ? "501 5.5.4 syntax: MAIL FROM:<address>"
             : options.size_limit && declared_size > *options.size_limit
                 ? "552 5.3.4 message too big"
                 : "250 2.1.0 sender ok";
    }
    if (verb == "RCPT") {
      std::string address;
      std::vector<std::string> parameters;
      const bool parsed = parse_path(argument, "TO:", address, parameters);
      return !transaction ? "503 5.5.1 MAIL first"
             : !parsed    ? "501 5.5.4 syntax: RCPT TO:<address>"
                          : "250 2.1.5 recipient ok";
    }
    if (verb == "DATA") {
      return !transaction                      ? "503 5.5.1 MAIL first"
             : transaction->recipients.empty() ? "554 5.5.1 no valid recipients"
                                               : "354 end data with <CR><LF>.<CR><LF>";
    }
    if (verb == "RSET" || verb == "NOOP") {
      return "250 2.0.0 ok";
    }
    if (verb == "QUIT") {
      return "221 2.0.0 bye";
    }
    return "500 5.5.2 command not recognized";
  }

  static asio::awaitable<void> converse(Impl* self, tcp::socket& socket, std::size_t index) {
    Connection connection(socket);
    Answer greeting = self->choose("CONNECT", "", "220 " + self->options.hostname + " ESMTP fake");
    if (!co_await send(connection, std::move(greeting))) {
      co_return;
    }
    bool greeted = false;
    bool in_tls = false;
    std::optional<FakeSmtpMessage> transaction;
    for (;;) {
      auto line = co_await connection.read_line();
      if (!line) {
        co_return;
      }
      std::string command = *line;
      while (!command.empty() && (command.back() == '\n' || command.back() == '\r')) {
        command.pop_back();
      }
      std::size_t space = command.find(' ');
      const std::string verb = to_upper(command.substr(0, space));
      const std::string argument = space == std::string::npos ? "" : command.substr(space + 1);
      Answer answer = self->choose(verb, argument,
                                   self->own_reply(verb, argument, greeted, in_tls, transaction));

      // The server follows its answer, whoever wrote it.
      if (answer.positive() && (verb == "EHLO" || verb == "HELO")) {
        greeted = true;
        transaction.reset();
      } else if (answer.positive() && verb == "MAIL") {
        transaction.emplace();
        parse_path(argument, "FROM:", transaction->sender, transaction->mail_parameters);
      } else if (answer.positive() && verb == "RCPT" && transaction) {
        std::string address;
        std::vector<std::string> parameters;
        parse_path(argument, "TO:", address, parameters);
        transaction->recipients.push_back(std::move(address));
      } else if (verb == "RSET") {
        transaction.reset();
      }
      self->update(index, [&](FakeSmtpSession& session) {
        session.commands.push_back(command);
        session.arrived_with_previous.push_back(connection.line_was_buffered());
        if (answer.positive() && (verb == "EHLO" || verb == "HELO")) {
          session.ehlo_name = argument;
        }
        session.quit = session.quit || verb == "QUIT";
      });

      if (!co_await send(connection, answer) || verb == "QUIT") {
        co_return;
      }
      if (verb == "STARTTLS" && answer.code() == 220 && self->tls) {
        if (!co_await connection.start_tls(*self->tls)) {
          co_return;
        }
        in_tls = true;
        greeted = false;
        transaction.reset();
        SSL* ssl = connection.ssl();
        const char* server_name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        self->update(index, [&](FakeSmtpSession& session) {
          session.tls = true;
          session.tls_version = SSL_get_version(ssl);
          session.server_name = server_name == nullptr ? "" : server_name;
        });
      } else if (verb == "DATA" && answer.code() == 354 && transaction) {
        FakeSmtpMessage message = std::move(*transaction);
        transaction.reset();
        if (!co_await receive_message(self, connection, index, std::move(message))) {
          co_return;
        }
      }
    }
  }

  // After the 354: the data up to the final dot, then its reply.
  static asio::awaitable<bool> receive_message(Impl* self, Connection& connection,
                                               std::size_t index, FakeSmtpMessage message) {
    for (;;) {
      auto line = co_await connection.read_line();
      if (!line) {
        co_return false;
      }
      if (*line == ".\r\n" || *line == ".\n") {
        break;
      }
      message.data.append(line->front() == '.' ? line->substr(1) : *line);
    }
    const Options& options = self->options;
    std::string own = options.size_limit && message.data.size() > *options.size_limit
                          ? "552 5.3.4 message too big"
                          : "250 2.0.0 queued as " + std::to_string(index + 1);
    // Rules for MESSAGE match against the data.
    Answer answer = self->choose("MESSAGE", message.data, std::move(own));
    message.reply_code = answer.code();
    {
      std::lock_guard lock(self->mutex);
      if (message.reply_code / 100 == 2) {
        ++self->accepted_messages;
      }
      self->sessions[index].messages.push_back(std::move(message));
    }
    self->message_accepted.notify_all();
    co_return co_await send(connection, std::move(answer));
  }
};

FakeSmtpServer::FakeSmtpServer(Options options) : impl_(std::make_unique<Impl>()) {
  if (options.starttls) {
    if (options.cert_file.empty() || options.key_file.empty()) {
      throw std::invalid_argument("FakeSmtpServer: starttls needs cert_file and key_file");
    }
    impl_->tls.emplace(asio::ssl::context::tls_server);
    SSL_CTX* context = impl_->tls->native_handle();
    if (options.tls_min == FakeTlsVersion::tls1_1) {
      // OpenSSL 3 allows TLS 1.1 only at security level 0.
      SSL_CTX_set_security_level(context, 0);
    }
    SSL_CTX_set_min_proto_version(context, openssl_version(options.tls_min));
    SSL_CTX_set_max_proto_version(context, openssl_version(options.tls_max));
    impl_->tls->use_certificate_chain_file(options.cert_file.string());
    impl_->tls->use_private_key_file(options.key_file.string(), asio::ssl::context::pem);
  }
  for (auto& rule : options.rules) {
    impl_->rules.push_back({std::move(rule), 0});
  }
  options.rules.clear();
  tcp::endpoint endpoint(asio::ip::make_address(options.address), options.port);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->options = std::move(options);
  asio::co_spawn(impl_->io, Impl::accept_loop(impl_.get()), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

FakeSmtpServer::~FakeSmtpServer() {
  impl_->io.stop();
  impl_->thread.join();
}

const std::string& FakeSmtpServer::address() const {
  return impl_->options.address;
}

std::uint16_t FakeSmtpServer::port() const {
  return impl_->port;
}

asio::ip::tcp::endpoint FakeSmtpServer::endpoint() const {
  return {asio::ip::make_address(impl_->options.address), impl_->port};
}

void FakeSmtpServer::add_rule(FakeSmtpRule rule) {
  std::lock_guard lock(impl_->mutex);
  impl_->rules.push_back({std::move(rule), 0});
}

void FakeSmtpServer::clear_rules() {
  std::lock_guard lock(impl_->mutex);
  impl_->rules.clear();
}

std::size_t FakeSmtpServer::most_concurrent_connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->most_open_sessions;
}

std::vector<FakeSmtpSession> FakeSmtpServer::sessions() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->sessions;
}

std::size_t FakeSmtpServer::connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->sessions.size();
}

std::vector<FakeSmtpMessage> FakeSmtpServer::messages() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<FakeSmtpMessage> accepted;
  for (const auto& session : impl_->sessions) {
    for (const auto& message : session.messages) {
      if (message.reply_code / 100 == 2) {
        accepted.push_back(message);
      }
    }
  }
  return accepted;
}

bool FakeSmtpServer::wait_for_messages(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->message_accepted.wait_for(
      lock, timeout, [this, count] { return impl_->accepted_messages >= count; });
}

std::vector<std::unique_ptr<FakeSmtpServer>> make_fake_smtp_servers(
    std::vector<FakeSmtpServer::Options> options) {
  constexpr int attempts = 20;
  for (int attempt = 1;; ++attempt) {
    std::vector<std::unique_ptr<FakeSmtpServer>> servers;
    try {
      std::uint16_t port = 0;
      for (auto options_of_one : options) {
        options_of_one.port = port;
        servers.push_back(std::make_unique<FakeSmtpServer>(std::move(options_of_one)));
        port = servers.front()->port();
      }
      return servers;
    } catch (const std::system_error&) {
      if (attempt == attempts) {
        throw;
      }
    }
  }
}

}  // namespace stsrelay::testing
