#include "smtp/delivery_status.hpp"

#include <utility>

namespace stsrelay::smtp {

namespace {

// The stages where a failure is the host's, not the message's: nothing of
// the transaction was said yet, so another MX host may do better.
bool before_transaction(Stage stage) {
  switch (stage) {
    case Stage::dns:
    case Stage::policy:
    case Stage::connect:
    case Stage::greeting:
    case Stage::ehlo:
    case Stage::starttls:
      return true;
    case Stage::mail:
    case Stage::rcpt:
    case Stage::data:
    case Stage::message:
      return false;
  }
  return false;
}

std::string joined_text(const Reply& reply) {
  std::string text;
  for (const auto& line : reply.lines) {
    if (!text.empty() && !line.empty()) {
      text += ' ';
    }
    text += line;
  }
  return text;
}

// RFC 3463 codes for failures without a reply. X.4.1 "no answer from host"
// (the connection could not be made), X.4.2 "bad connection" (it broke or
// went silent), X.4.3 "routing server failure" (DNS). TLS: X.7.4 "security
// features not supported" when STARTTLS is missing, X.7.5 "cryptographic
// failure" for a failed handshake or a certificate that does not validate
// (as Postfix reports them); a policy refusal without a TLS result is X.7.0.
std::string local_enhanced(Stage stage, const std::string& tls_result) {
  if (tls_result == "starttls-not-supported") {
    return "4.7.4";
  }
  if (!tls_result.empty()) {
    return "4.7.5";
  }
  switch (stage) {
    case Stage::dns:
      return "4.4.3";
    case Stage::policy:
      return "4.7.0";
    case Stage::connect:
      return "4.4.1";
    default:
      return "4.4.2";
  }
}

}  // namespace

std::string_view to_string(Stage stage) {
  switch (stage) {
    case Stage::dns:
      return "dns";
    case Stage::policy:
      return "policy";
    case Stage::connect:
      return "connect";
    case Stage::greeting:
      return "greeting";
    case Stage::ehlo:
      return "ehlo";
    case Stage::starttls:
      return "starttls";
    case Stage::mail:
      return "mail";
    case Stage::rcpt:
      return "rcpt";
    case Stage::data:
      return "data";
    case Stage::message:
      return "message";
  }
  return "unknown";
}

std::string_view to_string(Disposition disposition) {
  switch (disposition) {
    case Disposition::delivered:
      return "delivered";
    case Disposition::try_next_mx:
      return "try_next_mx";
    case Disposition::defer:
      return "defer";
    case Disposition::bounce:
      return "bounce";
  }
  return "unknown";
}

std::string DeliveryStatus::diagnostic() const {
  if (code == 0) {
    return enhanced.empty() ? text : enhanced + " " + text;
  }
  std::string rendered = std::to_string(code);
  if (!enhanced.empty()) {
    rendered += ' ';
    rendered += enhanced;
  }
  if (!text.empty()) {
    rendered += ' ';
    rendered += text;
  }
  return rendered;
}

DeliveryStatus classify_reply(Stage stage, const Reply& reply, std::string_view remote_mta) {
  DeliveryStatus status;
  status.stage = stage;
  status.code = reply.code;
  status.text = joined_text(reply);
  status.remote_mta = std::string(remote_mta);

  const int reply_class = reply.code / 100;
  // DATA goes on with 354; every other stage with 2xx.
  const int expected_class = stage == Stage::data ? 3 : 2;
  if (reply_class == expected_class) {
    status.disposition = Disposition::delivered;
  } else if (before_transaction(stage)) {
    // 4xx and 5xx alike: a host that cannot greet, EHLO or start TLS is
    // broken for every recipient, so it says nothing about the recipients.
    status.disposition = Disposition::try_next_mx;
  } else if (reply_class == 5) {
    status.disposition = Disposition::bounce;
  } else {
    // 4xx, and replies out of place (a 250 to DATA, a 354 to RCPT): the
    // server is confused, which is no reason to give up on the recipient.
    status.disposition = Disposition::defer;
  }

  if (!reply.enhanced.empty()) {
    status.enhanced = reply.enhanced;
  } else if (status.disposition == Disposition::delivered) {
    status.enhanced = "2.0.0";
  } else if (reply_class == 5) {
    status.enhanced = "5.0.0";
  } else {
    status.enhanced = "4.0.0";
  }
  return status;
}

DeliveryStatus classify_local_failure(Stage stage, std::string text, std::string_view remote_mta,
                                      std::string tls_result) {
  DeliveryStatus status;
  // Once MAIL was sent the recipients were given to this host: whatever
  // happened to them there, they wait for a later attempt.
  status.disposition = before_transaction(stage) ? Disposition::try_next_mx : Disposition::defer;
  status.stage = stage;
  status.enhanced = local_enhanced(stage, tls_result);
  status.text = std::move(text);
  status.remote_mta = std::string(remote_mta);
  status.tls_result = std::move(tls_result);
  return status;
}

DeliveryStatus make_local_bounce(Stage stage, std::string enhanced, std::string text,
                                 std::string_view remote_mta) {
  DeliveryStatus status;
  status.disposition = Disposition::bounce;
  status.stage = stage;
  status.enhanced = std::move(enhanced);
  status.text = std::move(text);
  status.remote_mta = std::string(remote_mta);
  return status;
}

}  // namespace stsrelay::smtp
