#include "relay/network.hpp"

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace stsrelay::relay {

namespace {

template <std::size_t N>
std::array<unsigned char, N> masked(std::array<unsigned char, N> bytes, unsigned prefix_length) {
  for (std::size_t i = 0; i < N; ++i) {
    const unsigned first_bit = static_cast<unsigned>(i) * 8;
    if (first_bit >= prefix_length) {
      bytes[i] = 0;
    } else if (prefix_length - first_bit < 8) {
      bytes[i] &= static_cast<unsigned char>(0xff00u >> (prefix_length - first_bit));
    }
  }
  return bytes;
}

asio::ip::address masked(const asio::ip::address& address, unsigned prefix_length) {
  if (address.is_v4()) {
    return asio::ip::address_v4(masked(address.to_v4().to_bytes(), prefix_length));
  }
  return asio::ip::address_v6(masked(address.to_v6().to_bytes(), prefix_length));
}

}  // namespace

tl::expected<Network, std::string> Network::parse(std::string_view text) {
  const auto slash = text.find('/');
  const std::string host(text.substr(0, slash));
  if (host.find('%') != std::string::npos) {
    return tl::unexpected("\"" + host + "\": scoped IPv6 addresses are not accepted");
  }
  std::error_code error;
  const auto address = asio::ip::make_address(host, error);
  if (error) {
    return tl::unexpected("\"" + host + "\" is not an IP address");
  }
  const unsigned max_length = address.is_v4() ? 32 : 128;

  Network network;
  network.base_ = address;
  network.prefix_length_ = max_length;
  if (slash != std::string_view::npos) {
    const auto length_text = text.substr(slash + 1);
    unsigned length = 0;
    const auto [end, parse_error] =
        std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
    if (length_text.empty() || parse_error != std::errc() ||
        end != length_text.data() + length_text.size() || length > max_length) {
      return tl::unexpected("prefix length \"" + std::string(length_text) + "\" is not in 0.." +
                            std::to_string(max_length));
    }
    network.prefix_length_ = length;
  }
  // A network written with host bits set is most likely a typo for a wider or
  // narrower network; guessing either way could open the relay, so refuse.
  const auto base = masked(address, network.prefix_length_);
  if (base != address) {
    return tl::unexpected("host bits set, did you mean " + base.to_string() + "/" +
                          std::to_string(network.prefix_length_) + "?");
  }
  return network;
}

bool Network::contains(const asio::ip::address& address) const {
  asio::ip::address client = address;
  if (client.is_v6() && client.to_v6().is_v4_mapped()) {
    client = asio::ip::make_address_v4(asio::ip::v4_mapped, client.to_v6());
  }
  if (base_.is_v6() && client.is_v4()) {
    client = asio::ip::make_address_v6(asio::ip::v4_mapped, client.to_v4());
  }
  if (client.is_v4() != base_.is_v4()) {
    return false;
  }
  if (client.is_v6() && client.to_v6().scope_id() != 0) {
    auto unscoped = client.to_v6();
    unscoped.scope_id(0);
    client = unscoped;
  }
  return masked(client, prefix_length_) == base_;
}

std::string Network::to_string() const {
  return base_.to_string() + "/" + std::to_string(prefix_length_);
}

}  // namespace stsrelay::relay
