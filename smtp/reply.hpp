#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace stsrelay::smtp {

// One SMTP reply: a three-digit code, an RFC 3463 enhanced status code and
// one or more text lines. Every reply the server sends carries an enhanced
// status code (RFC 2034), except the greeting and the EHLO reply.
struct Reply {
  int code = 0;
  std::string enhanced;  // "2.0.0"; empty for the 220 greeting and the EHLO response
  std::vector<std::string> lines;

  // The reply as sent on the wire, every line ending in CRLF
  // ("250-first\r\n250 last\r\n"), with the enhanced code after the code.
  std::string wire() const;
};

Reply make_reply(int code, std::string_view enhanced, std::string_view text);

}  // namespace stsrelay::smtp
