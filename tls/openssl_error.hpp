#pragma once

#include <string>
#include <system_error>

namespace stsrelay::tls {

// OpenSSL's own reason for the last failure (and its error queue cleared),
// or the error code's message when OpenSSL recorded none.
std::string openssl_reason(const std::error_code& error);

}  // namespace stsrelay::tls
