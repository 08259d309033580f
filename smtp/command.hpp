#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <tl/expected.hpp>

#include "smtp/address.hpp"
#include "smtp/received_message.hpp"
#include "smtp/reply.hpp"

namespace stsrelay::smtp {

// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
inline constexpr std::size_t max_command_line_length = 512;

enum class Verb {
  ehlo,
  helo,
  mail,
  rcpt,
  data,
  rset,
  noop,
  quit,
  vrfy,
  help,
  starttls,
  not_implemented,  // a known SMTP verb this server does not offer (AUTH, BDAT, EXPN, ...)
  unknown,
};

struct Command {
  Verb verb = Verb::unknown;
  // What follows the verb and its space, without surrounding spaces or tabs.
  std::string_view argument;
};

// Splits a command line (its CRLF already removed) into a case-insensitive
// verb and the argument.
Command parse_command(std::string_view line);

// RFC 1870 SIZE, RFC 6152 BODY and RFC 6531 SMTPUTF8: the MAIL parameters
// this server understands.
struct MailParameters {
  std::optional<std::uint64_t> size;  // saturates at the maximum for absurd values
  BodyType body = BodyType::unspecified;
  bool smtputf8 = false;
};

struct MailCommand {
  Path reverse_path;
  MailParameters parameters;
};

// The argument of MAIL ("FROM:<path> [parameters]"). Errors are the reply to
// send: 501 for syntax (5.1.7 for the address), 555 5.5.4 for a parameter that
// is unknown, repeated or has an unsupported value. Whether the parameters are
// acceptable here (SIZE over the limit, UTF-8 without SMTPUTF8) is the
// session's decision.
tl::expected<MailCommand, Reply> parse_mail_argument(std::string_view argument);

// The argument of RCPT ("TO:<path>"): 501 5.1.3 for the address, 555 5.5.4 for
// any parameter (none is supported).
tl::expected<Path, Reply> parse_rcpt_argument(std::string_view argument);

}  // namespace stsrelay::smtp
