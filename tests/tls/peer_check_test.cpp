#include "tls/peer_check.hpp"

#include <ctime>
#include <memory>
#include <optional>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tls/client_context.hpp"

namespace stsrelay::tls {
namespace {

using std::chrono::hours;
using testing::TestCa;

struct Handshake {
  bool completed = false;
  PeerCheck check;
  std::string version;
  std::string cipher;
};

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
  void operator()(SSL_CTX* context) const { SSL_CTX_free(context); }
};

// A whole TLS handshake between our client and an OpenSSL server over a
// memory BIO pair: the verdict code sees exactly what it sees on a socket.
Handshake handshake(SSL_CTX* client_context, const TestCa::Leaf& server_cert,
                    const std::string& host, bool server_tls11_only = false) {
  std::unique_ptr<SSL_CTX, SslFree> server_context(SSL_CTX_new(TLS_server_method()));
  if (server_tls11_only) {
    SSL_CTX_set_security_level(server_context.get(), 0);
    SSL_CTX_set_min_proto_version(server_context.get(), TLS1_1_VERSION);
    SSL_CTX_set_max_proto_version(server_context.get(), TLS1_1_VERSION);
  }
  EXPECT_EQ(SSL_CTX_use_certificate_chain_file(server_context.get(), server_cert.cert_file.c_str()),
            1);
  EXPECT_EQ(SSL_CTX_use_PrivateKey_file(server_context.get(), server_cert.key_file.c_str(),
                                        SSL_FILETYPE_PEM),
            1);

  std::unique_ptr<SSL, SslFree> client(SSL_new(client_context));
  std::unique_ptr<SSL, SslFree> server(SSL_new(server_context.get()));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  EXPECT_TRUE(prepare_client(client.get(), host));

  Handshake result;
  for (int round = 0; round < 20; ++round) {
    int client_done = SSL_do_handshake(client.get());
    int server_done = SSL_do_handshake(server.get());
    if (client_done == 1 && server_done == 1) {
      result.completed = true;
      break;
    }
    auto stuck = [](SSL* ssl, int rc) {
      int error = SSL_get_error(ssl, rc);
      return rc != 1 && error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE;
    };
    if (stuck(client.get(), client_done) || stuck(server.get(), server_done)) {
      break;
    }
  }
  ERR_clear_error();
  if (result.completed) {
    result.check = verdict(client.get(), host);
    result.version = protocol_version(client.get());
    result.cipher = cipher_name(client.get());
  }
  return result;
}

std::string utc_day(std::chrono::seconds offset) {
  std::time_t when = std::time(nullptr) + offset.count();
  std::tm parts{};
  gmtime_r(&when, &parts);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", &parts);
  return text;
}

class PeerCheckTest : public ::testing::Test {
 protected:
  PeerCheckTest() : ca_(temp_.path() / "ca") {
    auto context = make_client_context(ca_.ca_file().string());
    EXPECT_TRUE(context) << context.error();
    context_ = *context;
  }

  TestCa::Leaf issue(std::vector<std::string> names, hours not_after = hours(24),
                     hours not_before = hours(-1)) {
    return ca_.issue("leaf" + std::to_string(++issued_), {std::move(names), not_before, not_after});
  }

  Handshake connect(const TestCa::Leaf& leaf, const std::string& host) {
    return handshake(context_->native_handle(), leaf, host);
  }

  testing::TempDir temp_;
  TestCa ca_;
  std::shared_ptr<asio::ssl::context> context_;
  int issued_ = 0;
};

struct NameCase {
  const char* name;
  std::vector<std::string> certificate_names;
  std::string host;
  CertificateVerdict expected;
};

class PeerCheckNames : public PeerCheckTest, public ::testing::WithParamInterface<NameCase> {};

TEST_P(PeerCheckNames, Verdict) {
  auto result = connect(issue(GetParam().certificate_names), GetParam().host);
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, GetParam().expected) << result.check.detail;
}

INSTANTIATE_TEST_SUITE_P(
    Table, PeerCheckNames,
    ::testing::Values(
        NameCase{"exact", {"mx1.example.com"}, "mx1.example.com", CertificateVerdict::valid},
        NameCase{
            "case_insensitive", {"mx1.example.com"}, "MX1.Example.COM", CertificateVerdict::valid},
        NameCase{
            "trailing_dot", {"mx1.example.com"}, "mx1.example.com.", CertificateVerdict::valid},
        NameCase{"second_name",
                 {"a.example.org", "mx1.example.com"},
                 "mx1.example.com",
                 CertificateVerdict::valid},
        NameCase{
            "wildcard_one_label", {"*.example.com"}, "mx1.example.com", CertificateVerdict::valid},
        NameCase{"wildcard_not_two_labels",
                 {"*.example.com"},
                 "a.mx1.example.com",
                 CertificateVerdict::host_mismatch},
        NameCase{"wildcard_not_the_parent",
                 {"*.example.com"},
                 "example.com",
                 CertificateVerdict::host_mismatch},
        NameCase{"partial_wildcard",
                 {"mx*.example.com"},
                 "mx1.example.com",
                 CertificateVerdict::host_mismatch},
        NameCase{"wildcard_not_leftmost",
                 {"mx1.*.com"},
                 "mx1.example.com",
                 CertificateVerdict::host_mismatch},
        NameCase{"other_name",
                 {"mx2.example.com"},
                 "mx1.example.com",
                 CertificateVerdict::host_mismatch},
        NameCase{
            "suffix_only", {"example.com"}, "mx1.example.com", CertificateVerdict::host_mismatch}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(PeerCheckTest, ValidCertificate) {
  auto result = connect(issue({"mx1.example.com"}), "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::valid);
  EXPECT_EQ(result.check.detail, "certificate valid for mx1.example.com");
  EXPECT_TRUE(result.version == "TLSv1.3" || result.version == "TLSv1.2") << result.version;
  EXPECT_FALSE(result.cipher.empty());
}

TEST_F(PeerCheckTest, MismatchNamesTheCertificateNames) {
  auto result = connect(issue({"a.example", "b.example"}), "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::host_mismatch);
  EXPECT_EQ(result.check.detail, "certificate names a.example, b.example, not mx1.example.com");
}

TEST_F(PeerCheckTest, ExpiredNamesTheDay) {
  std::string before = utc_day(-hours(24));
  auto result = connect(issue({"mx1.example.com"}, -hours(24), -hours(48)), "mx1.example.com");
  std::string after = utc_day(-hours(24));
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::expired);
  EXPECT_TRUE(result.check.detail == "certificate for mx1.example.com expired " + before ||
              result.check.detail == "certificate for mx1.example.com expired " + after)
      << result.check.detail;
}

TEST_F(PeerCheckTest, NotYetValidCountsAsExpired) {
  auto result = connect(issue({"mx1.example.com"}, hours(72), hours(48)), "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::expired);
  EXPECT_NE(result.check.detail.find("is not valid before 20"), std::string::npos)
      << result.check.detail;
}

TEST_F(PeerCheckTest, UnknownCaIsNotTrusted) {
  TestCa other(temp_.path() / "other", "Other Test CA");
  auto leaf = other.issue("other", {{"mx1.example.com"}});
  auto result = connect(leaf, "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::not_trusted);
  EXPECT_EQ(result.check.detail,
            "certificate for mx1.example.com not signed by a trusted CA (issuer CN=Other Test CA)");
}

TEST_F(PeerCheckTest, TrustOutranksExpiryAndExpiryOutranksTheName) {
  TestCa other(temp_.path() / "other", "Other Test CA");
  auto untrusted_expired = other.issue("old", {{"mx1.example.com"}, -hours(48), -hours(24)});
  auto result = connect(untrusted_expired, "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::not_trusted) << result.check.detail;
  EXPECT_NE(result.check.detail.find("; certificate for mx1.example.com expired"),
            std::string::npos)
      << result.check.detail;

  auto expired_elsewhere = issue({"mx2.example.com"}, -hours(24), -hours(48));
  result = connect(expired_elsewhere, "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::expired) << result.check.detail;
  EXPECT_NE(result.check.detail.find("; certificate names mx2.example.com, not mx1.example.com"),
            std::string::npos)
      << result.check.detail;
}

// A self-signed certificate whose only name is its subject CN: neither
// trusted nor, since the CN is never consulted, a match for that name.
TestCa::Leaf self_signed_cn_only(const std::filesystem::path& directory, const std::string& cn) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  TestCa::Leaf leaf{directory / "self.crt", directory / "self.key"};
  FILE* file = std::fopen(leaf.cert_file.c_str(), "w");
  PEM_write_X509(file, cert);
  std::fclose(file);
  file = std::fopen(leaf.key_file.c_str(), "w");
  PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(file);
  X509_free(cert);
  EVP_PKEY_free(key);
  return leaf;
}

TEST_F(PeerCheckTest, SelfSignedCommonNameOnlyIsNeitherTrustedNorAMatch) {
  auto leaf = self_signed_cn_only(temp_.path(), "mx1.example.com");
  auto result = connect(leaf, "mx1.example.com");
  ASSERT_TRUE(result.completed);
  EXPECT_EQ(result.check.verdict, CertificateVerdict::not_trusted);
  EXPECT_EQ(result.check.detail,
            "certificate for mx1.example.com is self-signed (CN=mx1.example.com), not signed by a "
            "trusted CA; certificate names no DNS host (subject CN=mx1.example.com), not "
            "mx1.example.com");
}

TEST_F(PeerCheckTest, Tls11ServerFailsTheHandshake) {
  auto result =
      handshake(context_->native_handle(), issue({"mx1.example.com"}), "mx1.example.com", true);
  EXPECT_FALSE(result.completed);
}

TEST(PeerCheck, ResultTypesFollowRfc8460) {
  EXPECT_EQ(rfc8460_result_type(CertificateVerdict::valid), "valid");
  EXPECT_EQ(rfc8460_result_type(CertificateVerdict::host_mismatch), "certificate-host-mismatch");
  EXPECT_EQ(rfc8460_result_type(CertificateVerdict::expired), "certificate-expired");
  EXPECT_EQ(rfc8460_result_type(CertificateVerdict::not_trusted), "certificate-not-trusted");
  EXPECT_EQ(rfc8460_result_type(CertificateVerdict::validation_failure), "validation-failure");
}

TEST(PeerCheck, EmptyHostIsRefused) {
  std::unique_ptr<SSL_CTX, SslFree> context(SSL_CTX_new(TLS_client_method()));
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(context.get()));
  EXPECT_FALSE(prepare_client(ssl.get(), ""));
}

TEST(PeerCheck, NoCertificateIsAValidationFailure) {
  std::unique_ptr<SSL_CTX, SslFree> context(SSL_CTX_new(TLS_client_method()));
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(context.get()));
  ASSERT_TRUE(prepare_client(ssl.get(), "mx1.example.com"));
  PeerCheck check = verdict(ssl.get(), "mx1.example.com");
  EXPECT_EQ(check.verdict, CertificateVerdict::validation_failure);
  EXPECT_EQ(check.detail, "server mx1.example.com presented no certificate");
}

}  // namespace
}  // namespace stsrelay::tls
