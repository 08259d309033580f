#pragma once

#include <memory>
#include <string>

#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

namespace stsrelay::tls {

// The TLS client context for policy fetches and outbound SMTP: TLS 1.2 or
// newer, peer verification against ca_file (PEM bundle) or, when empty, the
// system trust store. Host names are checked per connection (peer_check.hpp).
// The context owns a cache of client sessions for connections that ask for
// resumption (session_resumption.hpp).
// The error names delivery.ca_file and OpenSSL's reason.
tl::expected<std::shared_ptr<asio::ssl::context>, std::string> make_client_context(
    const std::string& ca_file);

}  // namespace stsrelay::tls
