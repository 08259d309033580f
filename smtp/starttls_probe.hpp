#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <asio/ssl/context.hpp>

#include "tls/peer_check.hpp"

namespace stsrelay::smtp {

// What an MX host offers a sender: does it answer, offer STARTTLS, complete a
// TLS 1.2+ handshake, and present a certificate valid for its name?
struct StarttlsProbe {
  std::string address;  // the address that answered (or the last one tried)
  bool connected = false;
  bool starttls_offered = false;
  bool tls_established = false;
  std::string tls_version;
  std::string cipher;
  tls::PeerCheck certificate;
  std::string error;  // the first problem, for people; empty when all went well
};

// Connects to host's addresses in turn on port, EHLO, STARTTLS, handshake
// with SNI host, then QUIT. The whole probe is bounded by timeout.
asio::awaitable<StarttlsProbe> probe_starttls(std::string host,
                                              std::vector<asio::ip::address> addresses,
                                              std::uint16_t port,
                                              std::shared_ptr<asio::ssl::context> tls_context,
                                              std::string helo_name,
                                              std::chrono::milliseconds timeout);

}  // namespace stsrelay::smtp
