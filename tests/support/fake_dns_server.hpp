#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/address.hpp>
#include <asio/ip/udp.hpp>

namespace stsrelay::testing {

enum class DnsType : std::uint16_t {
  a = 1,
  cname = 5,
  mx = 15,
  txt = 16,
  aaaa = 28,
};

enum class DnsRcode : std::uint8_t {
  noerror = 0,
  formerr = 1,
  servfail = 2,
  nxdomain = 3,
  notimp = 4,
  refused = 5,
};

// An authoritative DNS server for tests, answering from zone data the test
// gives in code. UDP and TCP share one free port on a loopback address, so a
// separate process (the stsrelay binary) can use it too. It runs on a thread
// of its own; every method may be called from any thread at any time.
//
// Answers behave like a recursive server's would: a CNAME chain inside the
// zone is followed and returned in one response; a name outside the zone is
// NXDOMAIN; a name with records, but none of the asked type, is NODATA.
// Names are case-insensitive; a trailing dot is ignored.
class FakeDnsServer {
 public:
  // Throws std::system_error when the address cannot be bound (e.g. ::1
  // on a host without IPv6).
  explicit FakeDnsServer(asio::ip::address address = asio::ip::make_address("127.0.0.1"));
  ~FakeDnsServer();
  FakeDnsServer(const FakeDnsServer&) = delete;
  FakeDnsServer& operator=(const FakeDnsServer&) = delete;

  asio::ip::udp::endpoint endpoint() const;
  // "127.0.0.1:5353" or "[::1]:5353", as dns.servers takes it.
  std::string server_string() const;

  // host "." (or "") is the root: add_mx(domain, 0, ".") is an RFC 7505 null MX.
  void add_mx(std::string_view name, std::uint16_t preference, std::string_view host);
  void add_a(std::string_view name, std::string_view ipv4);
  void add_aaaa(std::string_view name, std::string_view ipv6);
  // One TXT record made of several character-strings (each at most 255 bytes).
  void add_txt(std::string_view name, std::vector<std::string> strings);
  void add_cname(std::string_view name, std::string_view target);
  // Every question for the name (or only those of one type) is answered
  // with this rcode and no records.
  void set_rcode(std::string_view name, DnsRcode rcode);
  void set_rcode(std::string_view name, DnsType type, DnsRcode rcode);
  // Questions for the name (or of one type) are read and never answered.
  void set_unresponsive(std::string_view name);
  void set_unresponsive(std::string_view name, DnsType type);
  // UDP answers for the name have TC=1 and no records; TCP answers are whole.
  void set_truncate_udp(std::string_view name);
  // Forgets records of one type, or everything about the name.
  void remove_records(std::string_view name, DnsType type);
  void remove_name(std::string_view name);

  // Questions received for the name (any type), over UDP and TCP.
  std::size_t query_count(std::string_view name) const;
  std::size_t tcp_query_count(std::string_view name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::testing
