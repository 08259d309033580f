#pragma once

#include <string>
#include <string_view>

#include "smtp/reply.hpp"

namespace stsrelay::smtp {

// Where in a delivery attempt something happened.
enum class Stage {
  dns,       // resolving the MX hosts or their addresses
  policy,    // MTA-STS: the host is not allowed, or TLS is not good enough
  connect,   // TCP connection to the MX host
  greeting,  // the 220 banner
  ehlo,      // EHLO / HELO
  starttls,  // the STARTTLS command and the TLS handshake
  mail,      // MAIL FROM
  rcpt,      // RCPT TO
  data,      // the DATA command (354)
  message,   // the reply after the final dot
};
std::string_view to_string(Stage stage);

// What is to be done with a recipient after an attempt (Postfix's
// smtp_trouble idea: one place decides).
enum class Disposition {
  delivered,    // the MX accepted it
  try_next_mx,  // this host failed as a whole: another MX host may do better
  defer,        // try again later
  bounce,       // give up: a permanent failure, the sender gets a DSN
};
std::string_view to_string(Disposition disposition);

// The outcome of an attempt for one recipient (or for the whole session),
// carrying what an RFC 3464 report needs: an RFC 3463 status, the remote MTA
// and the diagnostic.
struct DeliveryStatus {
  Disposition disposition = Disposition::defer;
  Stage stage = Stage::connect;
  int code = 0;            // the SMTP reply code; 0 when there was no reply
  std::string enhanced;    // "5.1.1"; derived from the code when the server gave none
  std::string text;        // the server's reply text, or what went wrong locally
  std::string remote_mta;  // the MX host name, "" before one was chosen
  // RFC 8460 result type for TLS and policy failures ("certificate-expired",
  // "starttls-not-supported", ...); empty otherwise.
  std::string tls_result;

  bool permanent() const { return disposition == Disposition::bounce; }
  // What logs, the queue and DSNs show: the reply ("550 5.1.1 no such
  // user"), or for a failure found here the enhanced code and the text
  // ("5.1.10 example.org accepts no mail ..."), as a server would put it.
  std::string diagnostic() const;
};

// Decides what a server reply at a stage means for the recipient(s) it
// concerns: 2xx (3xx for DATA) delivered/continue, 4xx defer, 5xx bounce,
// except at the session stages (greeting, EHLO, STARTTLS), where a failure
// is the host's and another MX is tried.
DeliveryStatus classify_reply(Stage stage, const Reply& reply, std::string_view remote_mta);

// A failure without a reply (connection refused or lost, timeout, TLS):
// before MAIL another MX is tried; after it the recipients are deferred.
// RFC 3463 codes: 4.4.1 connect, 4.4.2 lost or silent connection, 4.4.3
// DNS, 4.7.0 policy; with a tls_result 4.7.4 (starttls-not-supported) or
// 4.7.5 (handshake and certificate failures).
DeliveryStatus classify_local_failure(Stage stage, std::string text, std::string_view remote_mta,
                                      std::string tls_result = {});

// A permanent failure decided here rather than by the server (a message over
// the host's SIZE limit: "5.3.4"; one needing SMTPUTF8 it lacks: "5.6.7").
DeliveryStatus make_local_bounce(Stage stage, std::string enhanced, std::string text,
                                 std::string_view remote_mta);

}  // namespace stsrelay::smtp
