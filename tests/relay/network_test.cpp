#include "relay/network.hpp"

#include <gtest/gtest.h>

namespace stsrelay::relay {
namespace {

TEST(Network, BareAddressIsAHost) {
  EXPECT_EQ(Network::parse("192.0.2.7")->to_string(), "192.0.2.7/32");
  EXPECT_EQ(Network::parse("::1")->to_string(), "::1/128");
  EXPECT_EQ(Network::parse("192.0.2.7"), Network::parse("192.0.2.7/32"));
}

TEST(Network, ToStringRoundTrips) {
  for (const char* text : {"10.0.0.0/8", "0.0.0.0/0", "::/0", "2001:db8::/32", "::1/128",
                           "192.0.2.128/25", "::ffff:0.0.0.0/96"}) {
    const auto network = Network::parse(text);
    ASSERT_TRUE(network) << text << ": " << network.error();
    EXPECT_EQ(network->to_string(), text);
    EXPECT_EQ(Network::parse(network->to_string()), network);
  }
}

struct BadNetwork {
  const char* text;
  const char* reason_contains;
};

class NetworkRejects : public testing::TestWithParam<BadNetwork> {};

TEST_P(NetworkRejects, WithAReason) {
  const auto& c = GetParam();
  const auto network = Network::parse(c.text);
  ASSERT_FALSE(network) << c.text;
  EXPECT_NE(network.error().find(c.reason_contains), std::string::npos) << network.error();
}

INSTANTIATE_TEST_SUITE_P(
    Table, NetworkRejects,
    testing::Values(BadNetwork{"", "not an IP"}, BadNetwork{"example.com/24", "not an IP"},
                    BadNetwork{"10.0.0/8", "not an IP"}, BadNetwork{"10.0.0.0/33", "0..32"},
                    BadNetwork{"10.0.0.0/", "0..32"}, BadNetwork{"10.0.0.0/-1", "0..32"},
                    BadNetwork{"10.0.0.0/8x", "0..32"}, BadNetwork{"::/129", "0..128"},
                    BadNetwork{"[::1]/128", "not an IP"}, BadNetwork{"fe80::1%lo/64", "scoped"},
                    BadNetwork{"10.1.2.3/8", "host bits set, did you mean 10.0.0.0/8?"},
                    BadNetwork{"192.0.2.129/25", "did you mean 192.0.2.128/25?"},
                    BadNetwork{"2001:db8::1/32", "did you mean 2001:db8::/32?"}));

struct Membership {
  const char* network;
  const char* address;
  bool contained;
};

class NetworkContains : public testing::TestWithParam<Membership> {};

TEST_P(NetworkContains, Table) {
  const auto& c = GetParam();
  const auto network = Network::parse(c.network);
  ASSERT_TRUE(network) << network.error();
  EXPECT_EQ(network->contains(asio::ip::make_address(c.address)), c.contained)
      << c.network << " contains " << c.address;
}

INSTANTIATE_TEST_SUITE_P(
    Table, NetworkContains,
    testing::Values(
        Membership{"127.0.0.0/8", "127.0.0.1", true},
        Membership{"127.0.0.0/8", "127.255.255.255", true},
        Membership{"127.0.0.0/8", "128.0.0.1", false},
        Membership{"127.0.0.0/8", "126.255.255.255", false},
        Membership{"192.0.2.128/25", "192.0.2.128", true},
        Membership{"192.0.2.128/25", "192.0.2.255", true},
        Membership{"192.0.2.128/25", "192.0.2.127", false},
        Membership{"10.0.0.0/9", "10.127.0.1", true}, Membership{"10.0.0.0/9", "10.128.0.1", false},
        Membership{"0.0.0.0/0", "203.0.113.9", true}, Membership{"0.0.0.0/0", "::1", false},
        Membership{"192.0.2.7", "192.0.2.7", true}, Membership{"192.0.2.7", "192.0.2.8", false},
        // IPv4-mapped IPv6 clients (a dual-stack listener) match IPv4 networks.
        Membership{"127.0.0.0/8", "::ffff:127.0.0.1", true},
        Membership{"127.0.0.0/8", "::ffff:10.0.0.1", false},
        Membership{"192.0.2.7", "::ffff:192.0.2.7", true},
        // ...but not IPv4-compatible or other IPv6 addresses.
        Membership{"127.0.0.0/8", "::127.0.0.1", false},
        Membership{"::ffff:0.0.0.0/96", "10.1.2.3", true}, Membership{"::1/128", "::1", true},
        Membership{"::1/128", "::2", false}, Membership{"::1/128", "127.0.0.1", false},
        Membership{"::/0", "2001:db8::5", true},
        Membership{"2001:db8::/32", "2001:db8:ffff::1", true},
        Membership{"2001:db8::/32", "2001:db9::1", false},
        Membership{"2001:db8::/33", "2001:db8:7fff::1", true},
        Membership{"2001:db8::/33", "2001:db8:8000::1", false},
        Membership{"fe80::/10", "fe80::1%1", true}));

}  // namespace
}  // namespace stsrelay::relay
