#include "relay/endpoint.hpp"

#include <gtest/gtest.h>

namespace stsrelay::relay {
namespace {

struct GoodEndpoint {
  const char* text;
  const char* address;
  std::uint16_t port;
  const char* canonical;
};

class EndpointParses : public testing::TestWithParam<GoodEndpoint> {};

TEST_P(EndpointParses, AddressPortAndCanonicalText) {
  const auto& c = GetParam();
  const auto endpoint = Endpoint::parse(c.text);
  ASSERT_TRUE(endpoint) << endpoint.error();
  EXPECT_EQ(endpoint->address, asio::ip::make_address(c.address));
  EXPECT_EQ(endpoint->port, c.port);
  EXPECT_EQ(endpoint->to_string(), c.canonical);
  EXPECT_EQ(Endpoint::parse(endpoint->to_string()), endpoint);
}

INSTANTIATE_TEST_SUITE_P(
    Table, EndpointParses,
    testing::Values(GoodEndpoint{"1.2.3.4:25", "1.2.3.4", 25, "1.2.3.4:25"},
                    GoodEndpoint{"127.0.0.1:2525", "127.0.0.1", 2525, "127.0.0.1:2525"},
                    GoodEndpoint{"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
                    GoodEndpoint{"[::1]:2525", "::1", 2525, "[::1]:2525"},
                    GoodEndpoint{"[::]:65535", "::", 65535, "[::]:65535"},
                    GoodEndpoint{"[2001:DB8::1]:53", "2001:db8::1", 53, "[2001:db8::1]:53"},
                    GoodEndpoint{"[::ffff:192.0.2.1]:25", "::ffff:192.0.2.1", 25,
                                 "[::ffff:192.0.2.1]:25"}));

struct BadEndpoint {
  const char* text;
  const char* reason_contains;
};

class EndpointRejects : public testing::TestWithParam<BadEndpoint> {};

TEST_P(EndpointRejects, WithAReason) {
  const auto& c = GetParam();
  const auto endpoint = Endpoint::parse(c.text);
  ASSERT_FALSE(endpoint) << c.text;
  EXPECT_NE(endpoint.error().find(c.reason_contains), std::string::npos) << endpoint.error();
}

INSTANTIATE_TEST_SUITE_P(
    Table, EndpointRejects,
    testing::Values(
        BadEndpoint{"", "port missing"}, BadEndpoint{"1.2.3.4", "port missing"},
        BadEndpoint{"1.2.3.4:", "port missing"}, BadEndpoint{"1.2.3.4:0", "out of range"},
        BadEndpoint{"1.2.3.4:65536", "out of range"}, BadEndpoint{"1.2.3.4:99999", "out of range"},
        BadEndpoint{"1.2.3.4:123456", "not a port"}, BadEndpoint{"1.2.3.4:-1", "not a port"},
        BadEndpoint{"1.2.3.4:+25", "not a port"}, BadEndpoint{"1.2.3.4:25x", "not a port"},
        BadEndpoint{"1.2.3.4: 25", "not a port"}, BadEndpoint{"localhost:25", "host names"},
        BadEndpoint{"mx.example.com:25", "host names"}, BadEndpoint{"1.2.3:25", "not an IP"},
        BadEndpoint{"256.1.1.1:25", "not an IP"}, BadEndpoint{":25", "not an IP"},
        BadEndpoint{"::1:25", "bracketed"}, BadEndpoint{"2001:db8::1", "bracketed"},
        BadEndpoint{"[::1]", "port missing"}, BadEndpoint{"[::1]25", "port missing"},
        BadEndpoint{"[::1:25", "missing ']'"}, BadEndpoint{"[1.2.3.4]:25", "not an IPv6"},
        BadEndpoint{"[]:25", "not an IPv6"}));

}  // namespace
}  // namespace stsrelay::relay
