#include "tls/server_context.hpp"

#include <openssl/ssl.h>

#include "tls/openssl_error.hpp"

namespace stsrelay::tls {

tl::expected<asio::ssl::context, std::string> make_server_context(const std::string& cert_file,
                                                                  const std::string& key_file) {
  asio::ssl::context context(asio::ssl::context::tls_server);
  // Mail clients that cannot do TLS 1.2 fall back to plaintext on their own;
  // offering them SSLv3/TLS 1.0 would only weaken the others.
  SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression |
                      asio::ssl::context::single_dh_use);
  SSL_CTX_set_options(context.native_handle(), SSL_OP_CIPHER_SERVER_PREFERENCE);

  std::error_code error;
  context.use_certificate_chain_file(cert_file, error);
  if (error) {
    return tl::unexpected("listen.tls_cert: cannot load certificate chain from " + cert_file +
                          ": " + openssl_reason(error));
  }
  context.use_private_key_file(key_file, asio::ssl::context::pem, error);
  if (error) {
    return tl::unexpected("listen.tls_key: cannot load private key from " + key_file + ": " +
                          openssl_reason(error));
  }
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    return tl::unexpected("listen.tls_key: " + key_file + " does not match the certificate in " +
                          cert_file);
  }
  return context;
}

}  // namespace stsrelay::tls
