#include "relay/dsn.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "smtp/received_header.hpp"

namespace stsrelay::relay {

namespace {

// Limits that keep every line of the report within RFC 5322's 998
// characters even when a value cannot be folded (no spaces in it).
constexpr std::size_t max_address = 512;
constexpr std::size_t max_host = 255;
constexpr std::size_t max_diagnostic = 900;
constexpr std::size_t max_queue_id = 64;
// Postfix returns up to 50 KB of the message by default; the headers alone
// rarely exceed a few KB, and a report that is too big may bounce itself.
constexpr std::size_t max_header_section = 32 * 1024;
constexpr std::size_t fold_width = 78;

bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// The length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
// surrogates, at most U+10FFFF) that starts at text[at], or 0.
std::size_t utf8_sequence_length(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char second_min = 0x80;
  unsigned char second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    second_min = lead == 0xE0 ? 0xA0 : 0x80;
    second_max = lead == 0xED ? 0x9F : 0xBF;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    second_min = lead == 0xF0 ? 0x90 : 0x80;
    second_max = lead == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (at + length > text.size() || byte(1) < second_min || byte(1) > second_max) {
    return 0;
  }
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) {
      return 0;
    }
  }
  return length;
}

// Cuts text to at most limit bytes, never inside a UTF-8 sequence, marking
// the cut with "...".
void truncate(std::string& text, std::size_t limit) {
  if (text.size() <= limit) {
    return;
  }
  std::size_t cut = limit - 3;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  text.resize(cut);
  text += "...";
}

// A value as it may stand in a header field or a line of the report: CR, LF
// and every other control character become a space (so nothing can start a
// new field or line), runs of spaces become one, and the ends are trimmed.
// Non-ASCII bytes are kept only where UTF-8 is allowed and well-formed;
// otherwise they become '?'.
std::string clean(std::string_view value, bool allow_utf8, std::size_t limit) {
  std::string out;
  bool space_pending = false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c <= 0x20 || c == 0x7F) {
      space_pending = !out.empty();
      continue;
    }
    if (space_pending) {
      out += ' ';
      space_pending = false;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    const std::size_t length = allow_utf8 ? utf8_sequence_length(value, i) : 0;
    if (length == 0) {
      out += '?';
      continue;
    }
    out.append(value.substr(i, length));
    i += length - 1;
  }
  truncate(out, limit);
  return out;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_letter_or_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c);
}

// What may stand in a Message-ID (a dot-atom) and a MIME boundary alike:
// letters, digits, '-', '_' and, where allow_dot, '.'.
std::string clean_token(std::string_view value, std::size_t limit, std::string_view fallback,
                        bool allow_dot) {
  std::string out;
  for (const char c : value) {
    if ((is_letter_or_digit(c) || c == '-' || c == '_' || (allow_dot && c == '.')) &&
        out.size() < limit) {
      out += c;
    }
  }
  return out.empty() ? std::string(fallback) : out;
}

// A host name (or address literal) as it may stand in a field: it ends at
// the first character no host name has (anything but letters, digits,
// "-._:" and brackets), so that nothing appended to it is taken along.
std::string clean_name(std::string_view value, std::size_t limit, std::string_view fallback) {
  std::string out;
  for (const char c : value) {
    const bool allowed = is_letter_or_digit(c) || c == '-' || c == '.' || c == '_' || c == ':' ||
                         c == '[' || c == ']';
    if (!allowed || out.size() == limit) {
      break;
    }
    out += c;
  }
  return out.empty() ? std::string(fallback) : out;
}

// RFC 3463: class "." subject "." detail, class 2, 4 or 5, at most three
// digits each.
bool is_enhanced_status(std::string_view status) {
  if (status.size() < 5 || (status[0] != '2' && status[0] != '4' && status[0] != '5') ||
      status[1] != '.') {
    return false;
  }
  std::size_t digits = 0;
  int dots = 0;
  for (std::size_t i = 2; i < status.size(); ++i) {
    if (is_digit(status[i])) {
      if (++digits > 3) {
        return false;
      }
    } else if (status[i] == '.' && digits > 0 && ++dots == 1) {
      digits = 0;
    } else {
      return false;
    }
  }
  return dots == 1 && digits > 0;
}

// RFC 3464 §2.3.3; anything else is reported as failed, the safe reading of
// a report that exists at all.
std::string clean_action(std::string_view action) {
  std::string lower;
  for (const char c : action) {
    lower += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  constexpr std::array<std::string_view, 5> actions{"failed", "delayed", "delivered", "relayed",
                                                    "expanded"};
  return std::find(actions.begin(), actions.end(), lower) != actions.end() ? lower : "failed";
}

std::string clean_status(std::string_view status, std::string_view action) {
  if (is_enhanced_status(status)) {
    return std::string(status);
  }
  if (action == "failed") {
    return "5.0.0";
  }
  return action == "delayed" ? "4.0.0" : "2.0.0";
}

// Whether a diagnostic is an SMTP reply ("550 5.1.1 ...", "421-..."): it is
// then reported with diagnostic-type "smtp" (RFC 3464 §2.3.6), anything else
// (our own text about a connection, TLS or DNS failure) as "X-stsrelay".
bool is_smtp_reply(std::string_view diagnostic) {
  return diagnostic.size() >= 3 && diagnostic[0] >= '2' && diagnostic[0] <= '5' &&
         is_digit(diagnostic[1]) && is_digit(diagnostic[2]) &&
         (diagnostic.size() == 3 || diagnostic[3] == ' ' || diagnostic[3] == '-');
}

// RFC 6533 §3 utf-8-addr-unitext: UTF-8 as it is, except the characters
// that syntax reserves ('+', '=', '\\', space and controls), which are
// written \x{HH}.
std::string unitext(std::string_view address) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : address) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte == '+' || byte == '=' || byte == '\\' || byte <= 0x20 || byte == 0x7F) {
      out += "\\x{";
      out += hex[byte >> 4];
      out += hex[byte & 0x0F];
      out += '}';
    } else {
      out += c;
    }
  }
  return out;
}

// "Name: value", folded at spaces (CRLF before the space) so that lines stay
// near fold_width; unfolding gives back the value exactly. Ends in CRLF.
std::string field(std::string_view name, std::string_view value) {
  std::string out(name);
  out += ':';
  std::size_t line_start = 0;
  std::size_t position = 0;
  bool first = true;
  while (position <= value.size()) {
    const std::size_t space = std::min(value.find(' ', position), value.size());
    const std::string_view word = value.substr(position, space - position);
    if (!first && out.size() - line_start + 1 + word.size() > fold_width) {
      out += "\r\n";
      line_start = out.size();
    }
    out += ' ';
    out += word;
    first = false;
    position = space + 1;
  }
  out += "\r\n";
  return out;
}

// A paragraph of the human-readable part, wrapped at spaces; continuation
// lines are indented by indent.
std::string paragraph(std::string_view text, std::string_view indent = {}) {
  std::string out;
  std::size_t line_start = 0;
  std::size_t position = 0;
  while (position <= text.size()) {
    const std::size_t space = std::min(text.find(' ', position), text.size());
    const std::string_view word = text.substr(position, space - position);
    if (out.size() > line_start && out.size() - line_start + 1 + word.size() > fold_width) {
      out += "\r\n";
      line_start = out.size();
      out += indent;
    } else if (out.size() > line_start) {
      out += ' ';
    }
    out += word;
    position = space + 1;
  }
  out += "\r\n";
  return out;
}

// The original header section: up to the first empty line (or all of a
// message without a body), with CRLF line ends, cut before a header field
// (never inside a folded one) once it exceeds max_header_section.
std::string header_section(std::string_view content) {
  std::string out;
  std::size_t field_start = 0;  // in out: where the current header field began
  std::size_t position = 0;
  while (position < content.size()) {
    std::size_t end = content.find('\n', position);
    const bool last = end == std::string_view::npos;
    std::string_view line =
        content.substr(position, last ? std::string_view::npos : end - position);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      break;  // the end of the header section
    }
    const bool continuation = line.front() == ' ' || line.front() == '\t';
    if (!continuation) {
      field_start = out.size();
      if (out.size() >= max_header_section) {
        break;
      }
    }
    if (out.size() + line.size() + 2 > max_header_section + max_header_section / 4) {
      out.resize(field_start);  // a field too long to return whole
      break;
    }
    out += line;
    out += "\r\n";
    if (last) {
      break;
    }
    position = end + 1;
  }
  return out;
}

bool has_eight_bit(std::string_view text) {
  return !is_ascii(text);
}

// A boundary made of the seed's safe characters that occurs nowhere in the
// parts it separates (RFC 2046 §5.1.1: at most 70 characters).
std::string choose_boundary(std::string_view seed, std::string_view original_id,
                            std::string_view body) {
  std::string base = "=_" + clean_token(seed, 30, "stsrelay", false) + "/" +
                     clean_token(original_id, max_queue_id, "dsn", true);
  if (base.size() > 60) {
    base.resize(60);
  }
  std::string boundary = base;
  for (unsigned attempt = 1; body.find("--" + boundary) != std::string_view::npos; ++attempt) {
    boundary = base + "." + std::to_string(attempt);
  }
  return boundary;
}

struct CleanRecipient {
  std::string address;
  std::string action;
  std::string status;
  std::string remote_mta;
  std::string diagnostic;
};

}  // namespace

bool needs_dsn(std::string_view sender) {
  return !sender.empty();
}

bool dsn_is_global(const DsnInput& input) {
  return input.smtputf8 || !is_ascii(input.original_sender) ||
         std::any_of(input.recipients.begin(), input.recipients.end(),
                     [](const DsnRecipient& recipient) { return !is_ascii(recipient.address); });
}

std::string compose_dsn(const DsnInput& input, std::string boundary_seed) {
  const bool global = dsn_is_global(input);
  const std::string reporting_mta = clean_name(input.reporting_mta, max_host, "localhost");
  const std::string message_id_domain =
      clean_token(input.message_id_domain, max_host,
                  clean_token(reporting_mta, max_host, "localhost", true), true);
  const std::string original_id = clean_token(input.original_id, max_queue_id, "unknown", true);
  const std::string sender = clean(input.original_sender, global, max_address);

  std::vector<CleanRecipient> recipients;
  bool any_failed = false;
  for (const auto& recipient : input.recipients) {
    CleanRecipient cleaned;
    cleaned.address = clean(recipient.address, global, max_address);
    cleaned.action = clean_action(recipient.action);
    cleaned.status = clean_status(recipient.status, cleaned.action);
    cleaned.remote_mta = clean_name(recipient.remote_mta, max_host, "");
    cleaned.diagnostic = clean(recipient.diagnostic, global, max_diagnostic);
    any_failed = any_failed || cleaned.action == "failed";
    recipients.push_back(std::move(cleaned));
  }
  const std::string date = smtp::rfc5322_date(input.now);

  // Part 1: for people.
  std::string notice = paragraph("This is the mail delivery system at host " + reporting_mta + ".");
  notice += "\r\n";
  if (any_failed) {
    notice += paragraph(
        "Your message could not be delivered to one or more of its recipients, for the reasons "
        "given below. Its headers are attached; the message itself is not.");
  } else {
    notice += paragraph(
        "Your message has not been delivered yet to one or more of its recipients. Delivery is "
        "still being retried; you do not need to send the message again.");
  }
  notice += "\r\n";
  for (const std::string_view action : {"failed", "delayed"}) {
    bool heading = false;
    for (const auto& recipient : recipients) {
      if (recipient.action != action) {
        continue;
      }
      if (!heading) {
        notice += action == "failed" ? "Delivery failed permanently for:\r\n\r\n"
                                     : "Delivery is delayed for:\r\n\r\n";
        heading = true;
      }
      std::string line = "<" + recipient.address + ">: ";
      if (!recipient.remote_mta.empty() && is_smtp_reply(recipient.diagnostic)) {
        line += "host " + recipient.remote_mta + " said: ";
      }
      line += recipient.diagnostic.empty() ? "no reason recorded" : recipient.diagnostic;
      notice += paragraph(line, "    ");
      notice += "\r\n";
    }
  }

  // Part 2: for programs (RFC 3464 §2.2 per message, §2.3 per recipient).
  std::string status = field("Reporting-MTA", "dns; " + reporting_mta);
  status += field("X-Stsrelay-Queue-ID", original_id);
  status += field("Arrival-Date", smtp::rfc5322_date(input.arrival));
  for (const auto& recipient : recipients) {
    status += "\r\n";
    status += field("Final-Recipient", is_ascii(recipient.address)
                                           ? "rfc822; " + recipient.address
                                           : "utf-8; " + unitext(recipient.address));
    status += field("Action", recipient.action);
    status += field("Status", recipient.status);
    if (!recipient.remote_mta.empty()) {
      status += field("Remote-MTA", "dns; " + recipient.remote_mta);
    }
    if (!recipient.diagnostic.empty()) {
      status += field(
          "Diagnostic-Code",
          (is_smtp_reply(recipient.diagnostic) ? "smtp; " : "X-stsrelay; ") + recipient.diagnostic);
    }
    status += field("Last-Attempt-Date", date);
  }

  // Part 3: what the sender needs to recognise the message.
  const std::string headers = header_section(input.original_content);

  const std::string boundary =
      choose_boundary(boundary_seed, original_id, notice + status + headers);
  const bool eight_bit = has_eight_bit(notice) || has_eight_bit(status) || has_eight_bit(headers);
  const auto encoding = [](bool eight) {
    return eight ? std::string("Content-Transfer-Encoding: 8bit\r\n") : std::string();
  };

  std::string out;
  out += "From: Mail Delivery System <MAILER-DAEMON@" + reporting_mta + ">\r\n";
  out += field("To", "<" + sender + ">");
  out += any_failed ? "Subject: Undelivered Mail Returned to Sender\r\n"
                    : "Subject: Delayed Mail (still being retried)\r\n";
  out += "Date: " + date + "\r\n";
  out += "Message-ID: <" + clean_token(boundary_seed, 40, "dsn", false) + "." + original_id + "@" +
         message_id_domain + ">\r\n";
  out += "Auto-Submitted: auto-replied\r\n";
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
  out += "\tboundary=\"" + boundary + "\"\r\n";
  out += encoding(eight_bit);
  out += "\r\n";
  out += "This is a MIME-encapsulated message.\r\n";

  out += "\r\n--" + boundary + "\r\n";
  out += "Content-Description: Notification\r\n";
  out += std::string("Content-Type: text/plain; charset=") +
         (has_eight_bit(notice) ? "utf-8" : "us-ascii") + "\r\n";
  out += encoding(has_eight_bit(notice));
  out += "\r\n";
  out += notice;

  out += "\r\n--" + boundary + "\r\n";
  out += "Content-Description: Delivery report\r\n";
  out += std::string("Content-Type: message/") +
         (global ? "global-delivery-status" : "delivery-status") + "\r\n";
  out += encoding(has_eight_bit(status));
  out += "\r\n";
  out += status;

  out += "\r\n--" + boundary + "\r\n";
  out += "Content-Description: Undelivered Message Headers\r\n";
  out += std::string("Content-Type: ") +
         (global ? "message/global-headers" : "text/rfc822-headers") + "\r\n";
  out += encoding(has_eight_bit(headers));
  out += "\r\n";
  out += headers;

  out += "\r\n--" + boundary + "--\r\n";
  return out;
}

}  // namespace stsrelay::relay
