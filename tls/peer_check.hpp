#pragma once

#include <string>
#include <string_view>

#include <openssl/ssl.h>

namespace stsrelay::tls {

// How a server's certificate fared, in the terms of RFC 8460 §4.3 result types.
enum class CertificateVerdict {
  valid,
  host_mismatch,       // certificate-host-mismatch
  expired,             // certificate-expired (or not yet valid)
  not_trusted,         // certificate-not-trusted (unknown CA, self-signed)
  validation_failure,  // validation-failure (anything else)
};

// "certificate-host-mismatch" etc.; "valid" for valid.
std::string_view rfc8460_result_type(CertificateVerdict verdict);

// Prepares a client connection before the handshake: SNI set to host_name,
// and verification of the certificate against host_name per RFC 6125 (DNS-ID
// subjectAltNames, a wildcard only as the whole leftmost label). The handshake
// itself does not fail on a bad certificate: the caller decides (MTA-STS
// enforce refuses, opportunistic TLS carries on), after asking verdict().
bool prepare_client(SSL* ssl, const std::string& host_name);

struct PeerCheck {
  CertificateVerdict verdict = CertificateVerdict::validation_failure;
  std::string
      detail;  // "certificate for mx1.example.com expired 2026-11-02", OpenSSL's text otherwise
};

// After the handshake: the verdict on the peer certificate.
PeerCheck verdict(SSL* ssl, std::string_view host_name);

// "TLSv1.3", "TLS_AES_256_GCM_SHA384"
std::string protocol_version(SSL* ssl);
std::string cipher_name(SSL* ssl);

}  // namespace stsrelay::tls
