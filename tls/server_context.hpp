#pragma once

#include <string>

#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

namespace stsrelay::tls {

// The TLS context for inbound STARTTLS: TLS 1.2 or newer, the certificate
// chain and key from PEM files. The error names the file and OpenSSL's reason.
tl::expected<asio::ssl::context, std::string> make_server_context(const std::string& cert_file,
                                                                  const std::string& key_file);

}  // namespace stsrelay::tls
