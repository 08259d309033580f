#include "tls/peer_check.hpp"

#include <arpa/inet.h>
#include <ctime>
#include <memory>
#include <optional>
#include <vector>

#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace stsrelay::tls {

namespace {

// The first problem OpenSSL reported in one category, with what a person
// needs to understand it (the certificate's names and dates at that depth).
struct Problem {
  int error = X509_V_OK;
  int depth = 0;
  std::string subject;
  std::string issuer;
  std::string not_before;
  std::string not_after;
  std::vector<std::string> dns_names;
};

// Everything wrong with the peer's chain, one slot per category. OpenSSL
// reports problems in the order of its checks (chain building, name, time),
// which is not the order of importance, so all of them are kept and
// verdict() ranks them.
struct VerifyRecord {
  std::optional<Problem> chain;  // not trusted, or any other chain failure
  std::optional<Problem> time;   // expired or not yet valid
  std::optional<Problem> name;   // host name mismatch
};

void free_record(void* /*parent*/, void* pointer, CRYPTO_EX_DATA* /*data*/, int /*index*/,
                 long /*argl*/, void* /*argp*/) {
  delete static_cast<VerifyRecord*>(pointer);
}

int record_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_record);
  return index;
}

VerifyRecord* record_of(SSL* ssl) {
  return static_cast<VerifyRecord*>(SSL_get_ex_data(ssl, record_index()));
}

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) {
    return "";
  }
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(length));
}

std::string day_text(const ASN1_TIME* time) {
  std::tm parts{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) {
    return "(unknown date)";
  }
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", &parts);
  return text;
}

std::vector<std::string> dns_names_of(X509* cert) {
  std::vector<std::string> names;
  auto* general_names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (general_names == nullptr) {
    return names;
  }
  for (int i = 0; i < sk_GENERAL_NAME_num(general_names); ++i) {
    const GENERAL_NAME* entry = sk_GENERAL_NAME_value(general_names, i);
    if (entry->type == GEN_DNS) {
      const ASN1_STRING* value = entry->d.dNSName;
      names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                         static_cast<std::size_t>(ASN1_STRING_length(value)));
    }
  }
  GENERAL_NAMES_free(general_names);
  return names;
}

Problem describe(int error, int depth, X509* cert) {
  Problem problem;
  problem.error = error;
  problem.depth = depth;
  if (cert != nullptr) {
    problem.subject = name_text(X509_get_subject_name(cert));
    problem.issuer = name_text(X509_get_issuer_name(cert));
    problem.not_before = day_text(X509_get0_notBefore(cert));
    problem.not_after = day_text(X509_get0_notAfter(cert));
    problem.dns_names = dns_names_of(cert);
  }
  return problem;
}

CertificateVerdict classify(int error) {
  switch (error) {
    case X509_V_OK:
      return CertificateVerdict::valid;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return CertificateVerdict::expired;
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return CertificateVerdict::host_mismatch;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
      return CertificateVerdict::not_trusted;
    default:
      return CertificateVerdict::validation_failure;
  }
}

std::string join(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) {
    text += (text.empty() ? "" : ", ") + name;
  }
  return text;
}

std::string explain(const Problem& problem, std::string_view host) {
  const std::string host_text(host);
  const std::string whose =
      problem.depth == 0 ? "certificate for " + host_text
                         : "CA certificate " + problem.subject + " in the chain for " + host_text;
  switch (problem.error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return whose + " expired " + problem.not_after;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return whose + " is not valid before " + problem.not_before;
    case X509_V_ERR_HOSTNAME_MISMATCH:
      if (problem.dns_names.empty()) {
        return "certificate names no DNS host (subject " + problem.subject + "), not " + host_text;
      }
      return "certificate names " + join(problem.dns_names) + ", not " + host_text;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      return "certificate for " + host_text + " is self-signed (" + problem.subject +
             "), not signed by a trusted CA";
    // For a self-signed root sent in the chain, its issuer is itself.
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
      return "certificate for " + host_text + " not signed by a trusted CA (issuer " +
             problem.issuer + ")";
    default:
      return whose + " failed validation: " + X509_verify_cert_error_string(problem.error) +
             (problem.subject.empty() ? "" : " (" + problem.subject + ")");
  }
}

// Keeps the handshake going whatever is wrong with the chain, remembering
// the first problem of each kind.
int record_problem(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1) {
    return 1;
  }
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  VerifyRecord* record = ssl == nullptr ? nullptr : record_of(ssl);
  if (record == nullptr) {
    return 1;
  }
  int error = X509_STORE_CTX_get_error(store);
  auto& slot = classify(error) == CertificateVerdict::expired         ? record->time
               : classify(error) == CertificateVerdict::host_mismatch ? record->name
                                                                      : record->chain;
  if (!slot) {
    slot = describe(error, X509_STORE_CTX_get_error_depth(store),
                    X509_STORE_CTX_get_current_cert(store));
  }
  return 1;
}

bool is_ip_literal(const std::string& host) {
  unsigned char address[16];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

}  // namespace

std::string_view rfc8460_result_type(CertificateVerdict verdict) {
  switch (verdict) {
    case CertificateVerdict::valid:
      return "valid";
    case CertificateVerdict::host_mismatch:
      return "certificate-host-mismatch";
    case CertificateVerdict::expired:
      return "certificate-expired";
    case CertificateVerdict::not_trusted:
      return "certificate-not-trusted";
    case CertificateVerdict::validation_failure:
      return "validation-failure";
  }
  return "validation-failure";
}

bool prepare_client(SSL* ssl, const std::string& host_name) {
  std::string host = host_name;
  if (!host.empty() && host.back() == '.') {
    host.pop_back();
  }
  if (host.empty()) {
    return false;
  }
  auto record = std::make_unique<VerifyRecord>();
  std::unique_ptr<VerifyRecord> previous(record_of(ssl));
  if (SSL_set_ex_data(ssl, record_index(), record.get()) != 1) {
    previous.release();
    return false;
  }
  record.release();
  SSL_set_verify(ssl, SSL_VERIFY_PEER, record_problem);

  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip_literal(host)) {
    // RFC 6066 §3: SNI carries host names only.
    return X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
  }
  // RFC 6125 §6.4.3 with RFC 8461's reading: a wildcard stands for a whole
  // leftmost label only. The subject CN is never consulted (RFC 9525 retired
  // CN-IDs; public CAs have put every name in subjectAltName since 2012), so
  // a certificate whose only name is its CN does not match.
  X509_VERIFY_PARAM_set_hostflags(
      param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
  return SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 && SSL_set1_host(ssl, host.c_str()) == 1;
}

PeerCheck verdict(SSL* ssl, std::string_view host_name) {
  std::string_view host = host_name;
  if (!host.empty() && host.back() == '.') {
    host.remove_suffix(1);
  }
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) {
    return {CertificateVerdict::validation_failure,
            "server " + std::string(host) + " presented no certificate"};
  }
  const VerifyRecord* record = record_of(ssl);
  VerifyRecord fallback;
  if (record == nullptr) {
    // Not prepared by prepare_client: all we have is OpenSSL's last error.
    long error = SSL_get_verify_result(ssl);
    if (error != X509_V_OK) {
      fallback.chain = describe(static_cast<int>(error), 0, cert);
    }
    record = &fallback;
  }

  // Ranked by what a person must fix first: a chain nobody vouches for makes
  // its dates and names meaningless, and a certificate's dates are checked
  // before whether it names the host.
  std::vector<const Problem*> problems;
  for (const auto* slot : {&record->chain, &record->time, &record->name}) {
    if (*slot) {
      problems.push_back(&**slot);
    }
  }
  if (problems.empty()) {
    return {CertificateVerdict::valid, "certificate valid for " + std::string(host)};
  }
  PeerCheck check{classify(problems.front()->error), explain(*problems.front(), host)};
  for (std::size_t i = 1; i < problems.size(); ++i) {
    check.detail += "; " + explain(*problems[i], host);
  }
  return check;
}

std::string protocol_version(SSL* ssl) {
  return SSL_get_version(ssl);
}

std::string cipher_name(SSL* ssl) {
  const char* name = SSL_get_cipher_name(ssl);
  return name == nullptr ? "" : name;
}

}  // namespace stsrelay::tls
