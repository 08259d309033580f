#include "tls/client_context.hpp"

#include <openssl/ssl.h>

#include "tls/openssl_error.hpp"
#include "tls/session_resumption.hpp"

namespace stsrelay::tls {

tl::expected<std::shared_ptr<asio::ssl::context>, std::string> make_client_context(
    const std::string& ca_file) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  // RFC 8461 §4.2 and §3.3 ask for TLS 1.2 at least; nothing older is offered.
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_options(asio::ssl::context::default_workarounds |
                       asio::ssl::context::no_compression);
  // Each connection replaces this with a callback that records problems
  // instead of aborting the handshake (peer_check.cpp): the caller decides.
  context->set_verify_mode(asio::ssl::verify_peer);
  // Outbound SMTP resumes sessions per MX host (session_resumption.hpp); a
  // connection that does not ask for it is untouched.
  if (!attach_session_cache(context->native_handle())) {
    return tl::unexpected(std::string("cannot set up the TLS session cache"));
  }

  std::error_code error;
  if (ca_file.empty()) {
    context->set_default_verify_paths(error);
    if (error) {
      return tl::unexpected("delivery.ca_file: cannot load the system trust store: " +
                            openssl_reason(error));
    }
  } else {
    context->load_verify_file(ca_file, error);
    if (error) {
      return tl::unexpected("delivery.ca_file: cannot load CA certificates from " + ca_file + ": " +
                            openssl_reason(error));
    }
  }
  return context;
}

}  // namespace stsrelay::tls
