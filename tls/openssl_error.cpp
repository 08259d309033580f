#include "tls/openssl_error.hpp"

#include <openssl/err.h>

namespace stsrelay::tls {

std::string openssl_reason(const std::error_code& error) {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) {
    return error.message();
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

}  // namespace stsrelay::tls
