#include "smtp/server_session.hpp"

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "smtp/command.hpp"
#include "smtp/data_reader.hpp"
#include "smtp/received_header.hpp"

namespace stsrelay::smtp {
namespace {

enum class Phase {
  commands,
  data,
  awaiting_commit,  // message_ready was returned; waiting for message_queued/failed
  awaiting_tls,     // start_tls was returned; waiting for tls_started
  closed,
};

struct Transaction {
  bool mail_given = false;
  std::string sender;
  MailParameters parameters;
  std::vector<std::string> recipients;
  bool rcpt_attempted = false;
  std::string message_id;
};

std::string first_word(std::string_view argument) {
  const std::size_t end = argument.find_first_of(" \t");
  return std::string(argument.substr(0, end));
}

std::string one_line(std::string_view text) {
  std::string line(text);
  for (char& c : line) {
    if (c == '\r' || c == '\n') {
      c = ' ';
    }
  }
  return line;
}

}  // namespace

struct ServerSession::State {
  ServerSessionSettings settings;
  std::string client_address;

  Phase phase = Phase::commands;
  bool greeted = false;
  std::string input;
  std::size_t input_used = 0;  // octets of input already handled (compacted by next())
  // The current command line passed 512 octets: drop bytes up to its LF.
  bool discarding_long_line = false;
  std::string output;
  std::size_t errors = 0;

  // EHLO/HELO state, forgotten by STARTTLS (RFC 3207 §4.2).
  bool helo_given = false;
  bool esmtp = false;
  std::string helo;
  bool tls = false;
  TlsDetails tls_details;

  Transaction transaction;
  std::optional<DataReader> data;
  std::optional<ReceivedMessage> ready;
  bool ready_taken = false;

  State(ServerSessionSettings s, std::string address)
      : settings(std::move(s)), client_address(std::move(address)) {}

  // --- replies ---

  void send(const Reply& reply) { output += reply.wire(); }

  // A 4xx/5xx caused by the client; too many of them end the session
  // (max_errors == 0: no limit).
  void send_error(const Reply& reply) {
    send(reply);
    ++errors;
    if (settings.max_errors > 0 && errors >= settings.max_errors && phase != Phase::closed) {
      close_with(make_reply(421, "4.7.0", "Too many errors"));
    }
  }

  void close_with(const Reply& reply) {
    send(reply);
    close();
  }

  void close() {
    phase = Phase::closed;
    drop_input();
    data.reset();
    ready.reset();
  }

  void reset_transaction() {
    transaction = Transaction{};
    data.reset();
  }

  // --- input ---

  std::string_view pending_input() const { return std::string_view(input).substr(input_used); }

  void drop_input() {
    std::string().swap(input);
    input_used = 0;
  }

  void compact_input() {
    input.erase(0, input_used);
    input_used = 0;
  }

  ServerSession::Event run() {
    while (true) {
      switch (phase) {
        case Phase::closed:
          return Event::close;
        case Phase::awaiting_tls:
          return Event::start_tls;
        case Phase::awaiting_commit:
          return ready && !ready_taken ? Event::message_ready : Event::need_input;
        case Phase::data:
          if (!run_data()) {
            return Event::need_input;
          }
          break;
        case Phase::commands:
          if (!run_command()) {
            return Event::need_input;
          }
          break;
      }
    }
  }

  // Feeds buffered input to the data reader; false when it needs more.
  bool run_data() {
    if (pending_input().empty()) {
      return false;
    }
    const auto progress = data->feed(pending_input());
    input_used += progress.consumed;
    if (!progress.finished) {
      return false;
    }
    end_of_data();
    return true;
  }

  // Handles the next complete command line; false when there is none yet.
  bool run_command() {
    const std::string_view pending = pending_input();
    const std::size_t lf = pending.find('\n');
    if (lf == std::string_view::npos) {
      // 512 octets without an LF can no longer be a valid line (even if the
      // last one is a CR): stop buffering them.
      if (discarding_long_line || pending.size() >= max_command_line_length) {
        discarding_long_line = true;
        input_used = input.size();
      }
      return false;
    }
    const std::size_t line_octets = lf + 1;  // with its terminator
    input_used += line_octets;
    if (discarding_long_line || line_octets > max_command_line_length) {
      discarding_long_line = false;
      send_error(make_reply(500, "5.5.2", "Error: line too long"));
      return true;
    }
    // A copy: handlers may drop the input buffer (STARTTLS, QUIT).
    std::string line(pending.substr(0, lf));
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.find('\r') != std::string::npos) {
      send_error(make_reply(500, "5.5.2", "Error: bare CR in command"));
      return true;
    }
    handle(parse_command(line));
    return true;
  }

  // --- commands ---

  void handle(const Command& command) {
    switch (command.verb) {
      case Verb::ehlo:
      case Verb::helo:
        return handle_helo(command);
      case Verb::mail:
        return handle_mail(command.argument);
      case Verb::rcpt:
        return handle_rcpt(command.argument);
      case Verb::data:
        return handle_data(command.argument);
      case Verb::rset:
        if (!command.argument.empty()) {
          return send_error(make_reply(501, "5.5.4", "Syntax: RSET"));
        }
        reset_transaction();
        return send(make_reply(250, "2.0.0", "Ok"));
      case Verb::noop:
        return send(make_reply(250, "2.0.0", "Ok"));
      case Verb::quit:
        if (!command.argument.empty()) {
          return send_error(make_reply(501, "5.5.4", "Syntax: QUIT"));
        }
        return close_with(make_reply(221, "2.0.0", "Bye"));
      case Verb::vrfy:
        if (command.argument.empty()) {
          return send_error(make_reply(501, "5.5.4", "Syntax: VRFY address"));
        }
        return send(make_reply(252, "2.0.0",
                               "Cannot VRFY user, but will accept message and attempt delivery"));
      case Verb::help:
        return send(make_reply(214, "2.0.0", "See RFC 5321"));
      case Verb::starttls:
        return handle_starttls(command.argument);
      case Verb::not_implemented:
        return send_error(make_reply(502, "5.5.1", "Error: command not implemented"));
      case Verb::unknown:
        return send_error(make_reply(500, "5.5.2", "Error: command not recognized"));
    }
  }

  void handle_helo(const Command& command) {
    const bool ehlo = command.verb == Verb::ehlo;
    if (command.argument.empty()) {
      return send_error(
          make_reply(501, "5.5.4", ehlo ? "Syntax: EHLO hostname" : "Syntax: HELO hostname"));
    }
    reset_transaction();
    helo_given = true;
    esmtp = ehlo;
    helo = first_word(command.argument);
    if (!ehlo) {
      // RFC 2034 §3: no enhanced code in the reply to HELO or EHLO.
      return send(Reply{250, "", {settings.hostname}});
    }
    Reply reply{250, "", {settings.hostname, "PIPELINING"}};
    reply.lines.push_back("SIZE " + std::to_string(settings.max_message_size));
    reply.lines.push_back("8BITMIME");
    reply.lines.push_back("SMTPUTF8");
    reply.lines.push_back("ENHANCEDSTATUSCODES");
    if (settings.starttls_offered && !tls) {
      reply.lines.push_back("STARTTLS");
    }
    send(reply);
  }

  void handle_mail(std::string_view argument) {
    if (!helo_given) {
      return send_error(make_reply(503, "5.5.1", "Error: send HELO/EHLO first"));
    }
    if (transaction.mail_given) {
      return send_error(make_reply(503, "5.5.1", "Error: nested MAIL command"));
    }
    auto mail = parse_mail_argument(argument);
    if (!mail) {
      return send_error(mail.error());
    }
    if (mail->parameters.size && *mail->parameters.size > settings.max_message_size) {
      return send_error(make_reply(552, "5.3.4", "Message size exceeds fixed limit"));
    }
    if (mail->reverse_path.non_ascii && !mail->parameters.smtputf8) {
      return send_error(
          make_reply(553, "5.6.7", "Error: non-ASCII sender address requires SMTPUTF8"));
    }
    transaction = Transaction{};
    transaction.mail_given = true;
    transaction.sender = std::move(mail->reverse_path.address);
    transaction.parameters = mail->parameters;
    send(make_reply(250, "2.1.0", "Ok"));
  }

  void handle_rcpt(std::string_view argument) {
    if (!transaction.mail_given) {
      return send_error(make_reply(503, "5.5.1", "Error: need MAIL command"));
    }
    transaction.rcpt_attempted = true;
    auto path = parse_rcpt_argument(argument);
    if (!path) {
      return send_error(path.error());
    }
    if (path->non_ascii && !transaction.parameters.smtputf8) {
      return send_error(
          make_reply(553, "5.6.7", "Error: non-ASCII recipient address requires SMTPUTF8"));
    }
    if (transaction.recipients.size() >= settings.max_recipients) {
      return send_error(make_reply(452, "4.5.3", "Too many recipients"));
    }
    transaction.recipients.push_back(std::move(path->address));
    send(make_reply(250, "2.1.5", "Ok"));
  }

  void handle_data(std::string_view argument) {
    if (!argument.empty()) {
      return send_error(make_reply(501, "5.5.4", "Syntax: DATA"));
    }
    if (transaction.recipients.empty()) {
      if (transaction.rcpt_attempted) {
        return send_error(make_reply(554, "5.5.1", "No valid recipients"));
      }
      return send_error(make_reply(503, "5.5.1", "Error: need RCPT command"));
    }
    transaction.message_id = settings.new_message_id ? settings.new_message_id() : std::string();
    data.emplace(settings.max_message_size);
    phase = Phase::data;
    // RFC 3463 has no class 3, so the 354 carries no enhanced code.
    send(Reply{354, "", {"End data with <CR><LF>.<CR><LF>"}});
  }

  void handle_starttls(std::string_view argument) {
    if (!settings.starttls_offered) {
      return send_error(make_reply(502, "5.5.1", "Error: command not implemented"));
    }
    if (tls) {
      return send_error(make_reply(503, "5.5.1", "Error: TLS already active"));
    }
    if (!argument.empty()) {
      return send_error(make_reply(501, "5.5.4", "Syntax: STARTTLS"));
    }
    if (transaction.mail_given) {
      return send_error(make_reply(503, "5.5.1", "Error: MAIL transaction in progress"));
    }
    send(make_reply(220, "2.0.0", "Ready to start TLS"));
    // CVE-2011-0411: whatever the client pipelined after STARTTLS was sent in
    // plaintext and must never be taken as a command.
    drop_input();
    discarding_long_line = false;
    phase = Phase::awaiting_tls;
  }

  void end_of_data() {
    const bool too_big = data->too_big();
    std::string body = too_big ? std::string() : data->take_content();
    data.reset();
    phase = Phase::commands;
    if (too_big) {
      reset_transaction();
      return send_error(make_reply(552, "5.3.4", "Message too big"));
    }

    ReceivedMessage message;
    message.id = transaction.message_id;
    message.client_address = client_address;
    message.helo = helo;
    message.sender = std::move(transaction.sender);
    message.recipients = std::move(transaction.recipients);
    message.body = transaction.parameters.body;
    message.smtputf8 = transaction.parameters.smtputf8;
    message.over_tls = tls;

    ReceivedTrace trace;
    trace.helo = helo;
    trace.client_address = client_address;
    trace.hostname = settings.hostname;
    trace.message_id = message.id;
    trace.protocol = received_protocol(esmtp, tls, message.smtputf8);
    trace.tls = tls;
    trace.tls_version = tls_details.version;
    trace.tls_cipher = tls_details.cipher;
    if (message.recipients.size() == 1) {
      trace.single_recipient = message.recipients.front();
    }
    trace.time = settings.now ? settings.now() : std::chrono::system_clock::now();
    body.insert(0, received_header(trace));
    message.content = std::move(body);

    ready = std::move(message);
    ready_taken = false;
    phase = Phase::awaiting_commit;
  }

  void finish_commit(const Reply& reply) {
    if (phase != Phase::awaiting_commit) {
      return;
    }
    send(reply);
    ready.reset();
    reset_transaction();
    phase = Phase::commands;
  }
};

ServerSession::ServerSession(ServerSessionSettings settings, std::string client_address)
    : state_(std::make_unique<State>(std::move(settings), std::move(client_address))) {}

ServerSession::~ServerSession() = default;
ServerSession::ServerSession(ServerSession&&) noexcept = default;
ServerSession& ServerSession::operator=(ServerSession&&) noexcept = default;

void ServerSession::greet() {
  if (state_->greeted || state_->phase == Phase::closed) {
    return;
  }
  state_->greeted = true;
  // RFC 2034 §3: the greeting carries no enhanced code.
  state_->send(Reply{220, "", {state_->settings.hostname + " ESMTP stsrelay"}});
}

void ServerSession::receive(std::string_view bytes) {
  switch (state_->phase) {
    case Phase::closed:
    case Phase::awaiting_tls:  // plaintext sent before the handshake: never interpreted
      return;
    default:
      state_->input.append(bytes);
  }
}

ServerSession::Event ServerSession::next() {
  const Event event = state_->run();
  state_->compact_input();
  return event;
}

std::string ServerSession::take_output() {
  return std::exchange(state_->output, {});
}

ReceivedMessage ServerSession::take_message() {
  if (!state_->ready || state_->ready_taken) {
    return {};
  }
  state_->ready_taken = true;
  return std::move(*state_->ready);
}

void ServerSession::message_queued() {
  if (state_->phase != Phase::awaiting_commit) {
    return;
  }
  const std::string id = state_->transaction.message_id;
  state_->errors = 0;  // the client delivered mail: its earlier mistakes are forgiven
  state_->finish_commit(make_reply(250, "2.0.0", "Ok: queued as " + id));
}

void ServerSession::message_failed(std::string_view reason) {
  const std::string text = reason.empty() ? "Error: queue write failed" : one_line(reason);
  state_->finish_commit(make_reply(451, "4.3.0", text));
}

void ServerSession::tls_started(TlsDetails tls) {
  auto& s = *state_;
  if (s.phase != Phase::awaiting_tls) {
    return;
  }
  s.phase = Phase::commands;
  s.tls = true;
  s.tls_details = std::move(tls);
  s.helo_given = false;
  s.esmtp = false;
  s.helo.clear();
  s.reset_transaction();
  s.drop_input();
  s.discarding_long_line = false;
}

void ServerSession::timed_out() {
  if (state_->phase == Phase::closed) {
    return;
  }
  state_->close_with(
      make_reply(421, "4.4.2", state_->settings.hostname + " Error: timeout exceeded"));
}

void ServerSession::shutting_down() {
  if (state_->phase == Phase::closed) {
    return;
  }
  state_->close_with(
      make_reply(421, "4.3.2", state_->settings.hostname + " Service shutting down"));
}

bool ServerSession::in_data() const {
  return state_->phase == Phase::data;
}

bool ServerSession::closed() const {
  return state_->phase == Phase::closed;
}

}  // namespace stsrelay::smtp
