#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace stsrelay::relay {

using TimePoint = std::chrono::system_clock::time_point;

// What a delivery status notification says about one recipient (RFC 3464
// §2.3). Everything here may come from a remote server: compose_dsn
// sanitises it.
struct DsnRecipient {
  std::string address;
  std::string action;      // "failed" or "delayed"
  std::string status;      // RFC 3463: "5.1.1"
  std::string remote_mta;  // the MX host name; empty when none was reached
  // "550 5.1.1 no such user" (an SMTP reply: Diagnostic-Code type "smtp") or
  // a local text ("connection refused": type "X-stsrelay").
  std::string diagnostic;
};

struct DsnInput {
  std::string reporting_mta;  // our host name
  std::string original_id;    // the queue id of the message reported on
  std::string original_sender;
  TimePoint arrival;
  TimePoint now;  // Date, Last-Attempt-Date
  std::vector<DsnRecipient> recipients;
  std::string original_content;   // the queued message; only its header section is returned
  std::string message_id_domain;  // right-hand side of the Message-ID; reporting_mta if empty
  bool smtputf8 = false;          // the original message was received with SMTPUTF8
};

// An RFC 3464 `multipart/report; report-type=delivery-status` message to the
// original sender, CRLF line ends, ready to be queued as it is (with the null
// sender `<>`):
//   1. text/plain: what happened, one line per recipient;
//   2. message/delivery-status: Reporting-MTA, X-Stsrelay-Queue-ID and
//      Arrival-Date, then per recipient Final-Recipient, Action, Status,
//      Remote-MTA (when known), Diagnostic-Code, Last-Attempt-Date;
//   3. text/rfc822-headers: the original header section only (the body is
//      not returned), cut at a header boundary after 32 KiB.
// Subject "Undelivered Mail Returned to Sender", or "Delayed Mail (still
// being retried)" when no recipient failed. Auto-Submitted: auto-replied
// (RFC 3834), so that well-behaved responders do not answer it.
//
// Internationalised (RFC 6533) when dsn_is_global(input): parts 2 and 3 are
// message/global-delivery-status and message/global-headers, non-ASCII
// addresses are given as `utf-8; ...` (with `\x{HH}` for the characters
// RFC 6533 reserves). Queue such a message with SMTPUTF8.
//
// Addresses, host names and diagnostics are cleaned before they are written:
// CR, LF and other control characters become spaces (no header injection),
// bytes that are not valid UTF-8 (or any non-ASCII byte where UTF-8 is not
// allowed) become '?', and overlong values are cut, so every line stays
// within RFC 5322's 998 characters.
//
// boundary_seed makes the MIME boundary and the Message-ID; pass something
// random in production and a constant in tests: the output is a pure
// function of its arguments.
std::string compose_dsn(const DsnInput& input, std::string boundary_seed);

// Whether the DSN for input is an RFC 6533 one (the original was SMTPUTF8, or
// an address is not ASCII): it must then be queued with SMTPUTF8.
bool dsn_is_global(const DsnInput& input);

// Whether a failure is reported to this envelope sender: not to the null
// reverse-path `<>` (RFC 5321 §4.5.5; bounces are sent from it, so that they
// never bounce in turn).
bool needs_dsn(std::string_view sender);

}  // namespace stsrelay::relay
