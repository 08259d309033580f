#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace stsrelay::smtp {

// What the Received: trace header (RFC 5321 §4.4) records about one message.
struct ReceivedTrace {
  std::string_view helo;            // sanitised before it is written
  std::string_view client_address;  // textual IPv4 or IPv6
  std::string_view hostname;        // this relay
  std::string_view message_id;
  std::string_view protocol;  // see received_protocol()
  bool tls = false;
  std::string_view tls_version;
  std::string_view tls_cipher;
  std::string_view single_recipient;  // the "for" clause; empty unless exactly one recipient
  std::chrono::system_clock::time_point time;
};

// The "with" protocol (RFC 3848, RFC 6531): SMTP, ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS.
std::string_view received_protocol(bool esmtp, bool tls, bool smtputf8);

// The whole header, folded with CRLF TAB and ending in CRLF:
//   Received: from <helo> ([<ip>])
//   	(using <version> with cipher <cipher>)      only over TLS
//   	by <hostname> (stsrelay) with <protocol> id <id>
//   	for <rcpt>;                                  only with one recipient
//   	<date>
std::string received_header(const ReceivedTrace& trace);

// RFC 5322 date-time in UTC: "Fri, 04 Dec 2026 17:40:33 +0000".
std::string rfc5322_date(std::chrono::system_clock::time_point time);

// The helo as it may appear in a header: printable ASCII only, and nothing that
// would end or nest the comment around it; anything else becomes '?'.
std::string sanitize_helo(std::string_view helo);

// "[192.0.2.1]", "[IPv6:2001:db8::1]"; an IPv4-mapped IPv6 address is shown as IPv4.
std::string address_literal(std::string_view client_address);

}  // namespace stsrelay::smtp
