#include "smtp/received_header.hpp"

#include <array>
#include <cstdio>
#include <ctime>

namespace stsrelay::smtp {
namespace {

// Keeps header text to printable ASCII (TLS names come from the library, but
// a header must never carry a line break).
std::string printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const auto octet = static_cast<unsigned char>(c);
    if (octet < 0x20 || octet > 0x7e) {
      c = '?';
    }
  }
  return out;
}

}  // namespace

std::string_view received_protocol(bool esmtp, bool tls, bool smtputf8) {
  if (smtputf8) {
    return tls ? "UTF8SMTPS" : "UTF8SMTP";
  }
  if (tls) {
    return "ESMTPS";
  }
  return esmtp ? "ESMTP" : "SMTP";
}

std::string sanitize_helo(std::string_view helo) {
  std::string out(helo);
  for (char& c : out) {
    const auto octet = static_cast<unsigned char>(c);
    if (octet <= 0x20 || octet >= 0x7f || c == '(' || c == ')' || c == '\\' || c == ';') {
      c = '?';
    }
  }
  return out;
}

std::string address_literal(std::string_view client_address) {
  constexpr std::string_view mapped_prefix = "::ffff:";
  if (client_address.size() > mapped_prefix.size() &&
      client_address.find('.') != std::string_view::npos) {
    std::string lower(client_address.substr(0, mapped_prefix.size()));
    for (char& c : lower) {
      c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
    }
    if (lower == mapped_prefix) {
      client_address.remove_prefix(mapped_prefix.size());
    }
  }
  const bool ipv6 = client_address.find(':') != std::string_view::npos;
  return (ipv6 ? "[IPv6:" : "[") + printable(client_address) + "]";
}

std::string rfc5322_date(std::chrono::system_clock::time_point time) {
  static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::array<char, 64> buffer{};
  std::snprintf(buffer.data(), buffer.size(), "%s, %02d %s %04d %02d:%02d:%02d +0000",
                days[static_cast<std::size_t>(utc.tm_wday) % days.size()], utc.tm_mday,
                months[static_cast<std::size_t>(utc.tm_mon) % months.size()], utc.tm_year + 1900,
                utc.tm_hour, utc.tm_min, utc.tm_sec);
  return buffer.data();
}

std::string received_header(const ReceivedTrace& trace) {
  std::string header = "Received: from " + sanitize_helo(trace.helo) + " (" +
                       address_literal(trace.client_address) + ")\r\n";
  if (trace.tls) {
    header += "\t(using " + printable(trace.tls_version) + " with cipher " +
              printable(trace.tls_cipher) + ")\r\n";
  }
  header += "\tby " + printable(trace.hostname) + " (stsrelay) with " +
            std::string(trace.protocol) + " id " + printable(trace.message_id);
  if (!trace.single_recipient.empty()) {
    // The address came from a command line and may hold UTF-8 (SMTPUTF8), but
    // never a line break.
    std::string recipient(trace.single_recipient);
    for (char& c : recipient) {
      if (c == '\r' || c == '\n') {
        c = '?';
      }
    }
    header += "\r\n\tfor <" + recipient + ">";
  }
  header += ";\r\n\t" + rfc5322_date(trace.time) + "\r\n";
  return header;
}

}  // namespace stsrelay::smtp
