#pragma once

#include <string>
#include <vector>

namespace stsrelay::smtp {

// RFC 6152 / RFC 1652 BODY= parameter of MAIL.
enum class BodyType { unspecified, seven_bit, eight_bit_mime };

// A message as the server session hands it over once DATA has ended.
struct ReceivedMessage {
  std::string id;              // assigned by the session's id source when DATA began
  std::string client_address;  // textual IP of the client
  std::string helo;            // EHLO/HELO argument
  std::string sender;          // "local@domain"; empty for the null reverse-path <>
  std::vector<std::string> recipients;
  BodyType body = BodyType::unspecified;
  bool smtputf8 = false;  // MAIL carried SMTPUTF8 (RFC 6531)
  bool over_tls = false;
  // The Received: header this relay added, followed by the data as the client
  // sent it after dot-unstuffing, every line ending in CRLF.
  std::string content;
};

}  // namespace stsrelay::smtp
