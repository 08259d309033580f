#pragma once

#include <string>
#include <string_view>

#include <asio/ip/address.hpp>
#include <tl/expected.hpp>

namespace stsrelay::relay {

// A CIDR network ("10.0.0.0/8", "::1/128"); a bare address is a host (/32, /128).
// IPv4-mapped IPv6 clients (::ffff:a.b.c.d) match IPv4 networks.
class Network {
 public:
  static tl::expected<Network, std::string> parse(std::string_view text);

  bool contains(const asio::ip::address& address) const;
  std::string to_string() const;
  bool operator==(const Network&) const = default;

 private:
  asio::ip::address base_;
  unsigned prefix_length_ = 0;
};

}  // namespace stsrelay::relay
