#include "sts/tls_session_counts.hpp"

#include <gtest/gtest.h>

namespace stsrelay::sts {
namespace {

const ReportedPolicy enforced{"example.org", "sts", "20261204"};
const ReportedPolicy unpublished{"example.net", "no-policy-found", ""};

TEST(TlsSessionCounts, CountsPerPolicyAndFailureKind) {
  TlsSessionCounts counts;
  counts.succeeded(enforced);
  counts.succeeded(enforced);
  counts.failed(enforced, {"certificate-expired", "mx2.example.org", "192.0.2.7"});
  counts.failed(enforced, {"certificate-expired", "mx2.example.org", "192.0.2.7"});
  counts.failed(enforced, {"certificate-expired", "mx2.example.org", "192.0.2.8"});
  counts.failed(unpublished, {"starttls-not-supported", "mx.example.net", "198.51.100.1"});

  const auto& tallies = counts.tallies();
  ASSERT_EQ(tallies.size(), 2u);
  const auto& org = tallies.at(enforced);
  EXPECT_EQ(org.successful, 2u);
  EXPECT_EQ(org.failed(), 3u);
  EXPECT_EQ(org.failures.size(), 2u) << "one entry per (result type, host, address)";
  EXPECT_EQ(org.failures.at({"certificate-expired", "mx2.example.org", "192.0.2.7"}), 2u);
  const auto& net = tallies.at(unpublished);
  EXPECT_EQ(net.successful, 0u);
  EXPECT_EQ(net.failed(), 1u);
}

TEST(TlsSessionCounts, APolicyWithAnotherIdIsAnotherPolicy) {
  TlsSessionCounts counts;
  counts.succeeded(enforced);
  counts.succeeded({"example.org", "sts", "20261205"});
  EXPECT_EQ(counts.tallies().size(), 2u);
}

TEST(TlsSessionCounts, TakeEndsThePeriod) {
  TlsSessionCounts counts;
  counts.succeeded(enforced);
  auto period = counts.take();
  EXPECT_EQ(period.at(enforced).successful, 1u);
  EXPECT_TRUE(counts.tallies().empty());
  counts.succeeded(enforced);
  EXPECT_EQ(counts.tallies().at(enforced).successful, 1u);
}

}  // namespace
}  // namespace stsrelay::sts
