#include "tests/support/test_ca.hpp"

#include <cstdio>
#include <stdexcept>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace stsrelay::testing {

namespace {

struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertDeleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using Cert = std::unique_ptr<X509, CertDeleter>;

void check(bool ok, const char* what) {
  if (!ok) {
    throw std::runtime_error(std::string("test CA: ") + what);
  }
}

Key new_key() {
  Key key(EVP_EC_gen("P-256"));
  check(key != nullptr, "EC key generation failed");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
  check(extension != nullptr, "bad extension");
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

Cert new_cert(EVP_PKEY* key, const std::string& common_name, long serial,
              std::chrono::seconds not_before, std::chrono::seconds not_after) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before.count());
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after.count());
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  return cert;
}

void write_pem(const std::filesystem::path& path, const std::vector<X509*>& certs, EVP_PKEY* key) {
  FILE* file = std::fopen(path.c_str(), "w");
  check(file != nullptr, "cannot write PEM file");
  for (X509* cert : certs) {
    PEM_write_X509(file, cert);
  }
  if (key != nullptr) {
    PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr);
  }
  std::fclose(file);
}

}  // namespace

struct TestCa::Keys {
  Key key;
  Cert cert;
};

TestCa::TestCa(std::filesystem::path directory, std::string name)
    : keys_(std::make_unique<Keys>()), directory_(std::move(directory)) {
  std::filesystem::create_directories(directory_);
  keys_->key = new_key();
  keys_->cert = new_cert(keys_->key.get(), name, serial_++, std::chrono::hours(-1),
                         std::chrono::hours(24 * 30));
  X509_set_issuer_name(keys_->cert.get(), X509_get_subject_name(keys_->cert.get()));
  add_extension(keys_->cert.get(), keys_->cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  add_extension(keys_->cert.get(), keys_->cert.get(), NID_key_usage,
                "critical,keyCertSign,cRLSign");
  add_extension(keys_->cert.get(), keys_->cert.get(), NID_subject_key_identifier, "hash");
  check(X509_sign(keys_->cert.get(), keys_->key.get(), EVP_sha256()) > 0, "CA signing failed");
  ca_file_ = directory_ / "ca.pem";
  write_pem(ca_file_, {keys_->cert.get()}, nullptr);
}

TestCa::~TestCa() = default;

TestCa::Leaf TestCa::issue(const std::string& file_stem, const LeafOptions& options) {
  check(!options.dns_names.empty(), "a leaf needs at least one name");
  Key key = new_key();
  Cert cert = new_cert(key.get(), options.dns_names.front(), serial_++, options.not_before_offset,
                       options.not_after_offset);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(keys_->cert.get()));
  std::string names;
  for (const auto& dns_name : options.dns_names) {
    names += (names.empty() ? "DNS:" : ",DNS:") + dns_name;
  }
  add_extension(cert.get(), keys_->cert.get(), NID_subject_alt_name, names);
  add_extension(cert.get(), keys_->cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), keys_->cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  add_extension(cert.get(), keys_->cert.get(), NID_authority_key_identifier, "keyid");
  check(X509_sign(cert.get(), keys_->key.get(), EVP_sha256()) > 0, "leaf signing failed");

  Leaf leaf{directory_ / (file_stem + ".crt"), directory_ / (file_stem + ".key")};
  write_pem(leaf.cert_file, {cert.get(), keys_->cert.get()}, nullptr);
  write_pem(leaf.key_file, {}, key.get());
  return leaf;
}

}  // namespace stsrelay::testing
