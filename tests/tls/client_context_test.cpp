#include "tls/client_context.hpp"

#include <fstream>

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"

namespace stsrelay::tls {
namespace {

TEST(ClientContext, LoadsACaFile) {
  testing::TempDir temp;
  testing::TestCa ca(temp.path());
  auto context = make_client_context(ca.ca_file().string());
  ASSERT_TRUE(context) << context.error();
  SSL_CTX* native = (*context)->native_handle();
  EXPECT_EQ(SSL_CTX_get_min_proto_version(native), TLS1_2_VERSION);
  EXPECT_NE(SSL_CTX_get_verify_mode(native) & SSL_VERIFY_PEER, 0);
}

TEST(ClientContext, EmptyCaFileMeansTheSystemStore) {
  auto context = make_client_context("");
  ASSERT_TRUE(context) << context.error();
}

TEST(ClientContext, MissingCaFileIsNamed) {
  auto context = make_client_context("/nonexistent/ca.pem");
  ASSERT_FALSE(context);
  EXPECT_EQ(context.error().rfind("delivery.ca_file: ", 0), 0u) << context.error();
  EXPECT_NE(context.error().find("/nonexistent/ca.pem"), std::string::npos) << context.error();
}

TEST(ClientContext, CaFileWithoutCertificatesIsRejected) {
  testing::TempDir temp;
  auto path = temp.path() / "junk.pem";
  std::ofstream(path) << "not a certificate\n";
  auto context = make_client_context(path.string());
  ASSERT_FALSE(context);
  EXPECT_EQ(context.error().rfind("delivery.ca_file: ", 0), 0u) << context.error();
}

}  // namespace
}  // namespace stsrelay::tls
