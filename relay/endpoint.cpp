#include "relay/endpoint.hpp"

#include <charconv>
#include <system_error>

namespace stsrelay::relay {

namespace {

tl::expected<std::uint16_t, std::string> parse_port(std::string_view text) {
  if (text.empty()) {
    return tl::unexpected(std::string("port missing"));
  }
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.size() > 5) {
    return tl::unexpected("\"" + std::string(text) + "\" is not a port number");
  }
  if (value == 0 || value > 65535) {
    return tl::unexpected("port " + std::string(text) + " is out of range 1..65535");
  }
  return static_cast<std::uint16_t>(value);
}

}  // namespace

tl::expected<Endpoint, std::string> Endpoint::parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  bool bracketed = false;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return tl::unexpected(std::string("missing ']' after the IPv6 address"));
    }
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.starts_with(':')) {
      return tl::unexpected(std::string("port missing (expected \"[v6]:port\")"));
    }
    port = rest.substr(1);
    bracketed = true;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return tl::unexpected(std::string("port missing (expected \"ip:port\")"));
    }
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return tl::unexpected(std::string("an IPv6 address must be bracketed: \"[v6]:port\""));
    }
    port = text.substr(colon + 1);
  }

  std::error_code error;
  Endpoint endpoint;
  if (bracketed) {
    const auto v6 = asio::ip::make_address_v6(std::string(host), error);
    if (error) {
      return tl::unexpected("\"" + std::string(host) + "\" is not an IPv6 address");
    }
    endpoint.address = v6;
  } else {
    const auto v4 = asio::ip::make_address_v4(std::string(host), error);
    if (error) {
      return tl::unexpected("\"" + std::string(host) +
                            "\" is not an IP address (host names are not accepted)");
    }
    endpoint.address = v4;
  }
  auto port_number = parse_port(port);
  if (!port_number) {
    return tl::unexpected(port_number.error());
  }
  endpoint.port = *port_number;
  return endpoint;
}

std::string Endpoint::to_string() const {
  if (address.is_v6()) {
    return "[" + address.to_string() + "]:" + std::to_string(port);
  }
  return address.to_string() + ":" + std::to_string(port);
}

}  // namespace stsrelay::relay
