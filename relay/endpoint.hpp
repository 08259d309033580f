#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <asio/ip/address.hpp>
#include <tl/expected.hpp>

namespace stsrelay::relay {

// An IP address and port as written in the config: "127.0.0.1:2525",
// "[::1]:2525". Host names are not accepted: a listener or resolver address
// that depends on DNS would fail in confusing ways at start-up.
struct Endpoint {
  asio::ip::address address;
  std::uint16_t port = 0;

  static tl::expected<Endpoint, std::string> parse(std::string_view text);
  std::string to_string() const;
  bool operator==(const Endpoint&) const = default;
};

}  // namespace stsrelay::relay
