#include "smtp/command.hpp"

#include <array>
#include <limits>
#include <utility>

namespace stsrelay::smtp {
namespace {

unsigned char to_lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != to_lower(b[i])) {
      return false;
    }
  }
  return true;
}

bool istarts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_blank(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_blank(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

constexpr std::array<std::pair<std::string_view, Verb>, 20> verbs{{
    {"EHLO", Verb::ehlo},
    {"HELO", Verb::helo},
    {"MAIL", Verb::mail},
    {"RCPT", Verb::rcpt},
    {"DATA", Verb::data},
    {"RSET", Verb::rset},
    {"NOOP", Verb::noop},
    {"QUIT", Verb::quit},
    {"VRFY", Verb::vrfy},
    {"HELP", Verb::help},
    {"STARTTLS", Verb::starttls},
    {"AUTH", Verb::not_implemented},
    {"BDAT", Verb::not_implemented},
    {"EXPN", Verb::not_implemented},
    {"TURN", Verb::not_implemented},
    {"ETRN", Verb::not_implemented},
    {"ATRN", Verb::not_implemented},
    {"SEND", Verb::not_implemented},
    {"SOML", Verb::not_implemented},
    {"SAML", Verb::not_implemented},
}};

// Splits "FROM:<path> params" after the keyword; a space after the colon is
// tolerated because many clients send one.
std::optional<std::string_view> after_keyword(std::string_view argument, std::string_view keyword) {
  if (!istarts_with(argument, keyword)) {
    return std::nullopt;
  }
  argument.remove_prefix(keyword.size());
  while (!argument.empty() && argument.front() == ' ') {
    argument.remove_prefix(1);
  }
  return argument;
}

struct Parameter {
  std::string_view keyword;
  std::optional<std::string_view> value;
};

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
bool is_esmtp_keyword(std::string_view keyword) {
  if (keyword.empty()) {
    return false;
  }
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    const auto c = static_cast<unsigned char>(keyword[i]);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && !(i > 0 && c == '-')) {
      return false;
    }
  }
  return true;
}

// esmtp-value = 1*(%d33-60 / %d62-126), widened to UTF-8 by RFC 6531.
bool is_esmtp_value(std::string_view value) {
  if (value.empty()) {
    return false;
  }
  for (unsigned char c : value) {
    if (c < 33 || c == '=' || c == 127) {
      return false;
    }
  }
  return true;
}

std::optional<Parameter> split_parameter(std::string_view text) {
  const std::size_t equals = text.find('=');
  Parameter parameter{text.substr(0, equals), std::nullopt};
  if (equals != std::string_view::npos) {
    parameter.value = text.substr(equals + 1);
    if (!is_esmtp_value(*parameter.value)) {
      return std::nullopt;
    }
  }
  if (!is_esmtp_keyword(parameter.keyword)) {
    return std::nullopt;
  }
  return parameter;
}

// Calls handle(parameter) for each space-separated parameter; stops at the
// first error reply.
template <typename Handler>
std::optional<Reply> for_each_parameter(std::string_view text, Handler handle) {
  while (true) {
    while (!text.empty() && text.front() == ' ') {
      text.remove_prefix(1);
    }
    if (text.empty()) {
      return std::nullopt;
    }
    const std::size_t end = text.find(' ');
    const auto parameter = split_parameter(text.substr(0, end));
    if (!parameter) {
      return make_reply(501, "5.5.4", "Error: bad parameter syntax");
    }
    if (auto error = handle(*parameter)) {
      return error;
    }
    if (end == std::string_view::npos) {
      return std::nullopt;
    }
    text.remove_prefix(end);
  }
}

std::optional<std::uint64_t> parse_size_value(std::string_view value) {
  // RFC 1870: size-value = 1*20DIGIT
  if (value.empty() || value.size() > 20) {
    return std::nullopt;
  }
  std::uint64_t size = 0;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  for (char c : value) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    const auto digit = static_cast<std::uint64_t>(c - '0');
    size = size > (max - digit) / 10 ? max : size * 10 + digit;
  }
  return size;
}

Reply unsupported_parameter(std::string_view keyword) {
  return make_reply(555, "5.5.4", "Error: unsupported parameter " + std::string(keyword));
}

Reply path_error_reply(PathError error, PathKind kind) {
  const bool sender = kind == PathKind::reverse;
  const std::string_view enhanced = sender ? "5.1.7" : "5.1.3";
  const std::string_view who = sender ? "sender" : "recipient";
  switch (error) {
    case PathError::too_long:
      return make_reply(501, enhanced, "Error: " + std::string(who) + " address too long");
    case PathError::invalid_utf8:
      return make_reply(501, enhanced,
                        "Error: " + std::string(who) + " address is not valid UTF-8");
    case PathError::syntax:
      break;
  }
  return make_reply(501, enhanced, "Error: bad " + std::string(who) + " address syntax");
}

}  // namespace

Command parse_command(std::string_view line) {
  const std::size_t space = line.find(' ');
  const std::string_view word = line.substr(0, space);
  Command command;
  for (const auto& [name, verb] : verbs) {
    if (iequals(word, name)) {
      command.verb = verb;
      break;
    }
  }
  if (space != std::string_view::npos) {
    command.argument = trim(line.substr(space + 1));
  }
  return command;
}

tl::expected<MailCommand, Reply> parse_mail_argument(std::string_view argument) {
  const auto rest = after_keyword(argument, "FROM:");
  if (!rest || rest->empty() || rest->front() != '<') {
    return tl::make_unexpected(make_reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"));
  }
  auto parsed = parse_path(*rest, PathKind::reverse);
  if (!parsed) {
    return tl::make_unexpected(path_error_reply(parsed.error(), PathKind::reverse));
  }
  const std::string_view parameters = rest->substr(parsed->length);
  if (!parameters.empty() && parameters.front() != ' ') {
    return tl::make_unexpected(path_error_reply(PathError::syntax, PathKind::reverse));
  }

  MailCommand mail{std::move(parsed->path), {}};
  bool body_seen = false;
  auto error = for_each_parameter(parameters, [&](const Parameter& p) -> std::optional<Reply> {
    if (iequals(p.keyword, "SIZE")) {
      if (mail.parameters.size) {
        return unsupported_parameter(p.keyword);
      }
      const auto size = p.value ? parse_size_value(*p.value) : std::nullopt;
      if (!size) {
        return make_reply(501, "5.5.4", "Error: bad SIZE value");
      }
      mail.parameters.size = size;
    } else if (iequals(p.keyword, "BODY")) {
      if (body_seen || !p.value) {
        return unsupported_parameter(p.keyword);
      }
      body_seen = true;
      if (iequals(*p.value, "7BIT")) {
        mail.parameters.body = BodyType::seven_bit;
      } else if (iequals(*p.value, "8BITMIME")) {
        mail.parameters.body = BodyType::eight_bit_mime;
      } else {
        return make_reply(555, "5.5.4", "Error: unsupported BODY value");
      }
    } else if (iequals(p.keyword, "SMTPUTF8")) {
      if (mail.parameters.smtputf8 || p.value) {
        return unsupported_parameter(p.keyword);
      }
      mail.parameters.smtputf8 = true;
    } else {
      return unsupported_parameter(p.keyword);
    }
    return std::nullopt;
  });
  if (error) {
    return tl::make_unexpected(std::move(*error));
  }
  return mail;
}

tl::expected<Path, Reply> parse_rcpt_argument(std::string_view argument) {
  const auto rest = after_keyword(argument, "TO:");
  if (!rest || rest->empty() || rest->front() != '<') {
    return tl::make_unexpected(make_reply(501, "5.5.4", "Syntax: RCPT TO:<address>"));
  }
  auto parsed = parse_path(*rest, PathKind::forward);
  if (!parsed) {
    return tl::make_unexpected(path_error_reply(parsed.error(), PathKind::forward));
  }
  const std::string_view parameters = rest->substr(parsed->length);
  if (!parameters.empty() && parameters.front() != ' ') {
    return tl::make_unexpected(path_error_reply(PathError::syntax, PathKind::forward));
  }
  auto error = for_each_parameter(parameters, [](const Parameter& p) -> std::optional<Reply> {
    return unsupported_parameter(p.keyword);
  });
  if (error) {
    return tl::make_unexpected(std::move(*error));
  }
  return std::move(parsed->path);
}

}  // namespace stsrelay::smtp
