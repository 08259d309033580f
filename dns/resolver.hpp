#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/udp.hpp>
#include <tl/expected.hpp>

namespace stsrelay::dns {

// What a lookup found, keeping the DNS meaning: delivery treats each one
// differently (NODATA for MX means implicit MX, NXDOMAIN bounces, a server
// failure or a timeout defers).
enum class Status {
  ok,              // records found
  no_data,         // the name exists but has no records of this type (NODATA)
  no_such_name,    // NXDOMAIN
  server_failure,  // SERVFAIL, REFUSED, FORMERR, a malformed answer: try again later
  timeout,         // no answer within dns.timeout
  cancelled,       // the resolver was shut down
};
std::string_view to_string(Status status);

struct MxHost {
  std::string name;  // no trailing dot, as in the answer (case kept)
  std::uint16_t preference = 0;
  bool operator==(const MxHost&) const = default;
};

struct MxAnswer {
  Status status = Status::ok;
  // Sorted by preference; hosts of equal preference in random order.
  std::vector<MxHost> hosts;
  // RFC 7505 null MX ("0 ."): the domain accepts no mail. hosts is empty then.
  bool null_mx = false;
  std::string detail;  // c-ares' description when status is not ok
};

struct AddressAnswer {
  Status status = Status::ok;
  std::vector<asio::ip::address> addresses;  // IPv6 first, then IPv4
  std::string detail;
};

struct TxtAnswer {
  Status status = Status::ok;
  // One entry per TXT record: the record's character-strings joined without
  // separators (RFC 7208 §3.3 style); strings of different records are never joined.
  std::vector<std::string> records;
  std::string detail;
};

struct ResolverOptions {
  std::vector<asio::ip::udp::endpoint> servers;  // empty: /etc/resolv.conf
  std::chrono::milliseconds timeout{5000};       // bounds each whole lookup
};

// DNS lookups as coroutines. The production implementation drives c-ares
// from the Asio event loop (no thread of its own); tests substitute fakes.
class Resolver {
 public:
  virtual ~Resolver() = default;
  virtual asio::awaitable<MxAnswer> mx(std::string domain) = 0;
  // A and AAAA together: ok when either has records.
  virtual asio::awaitable<AddressAnswer> addresses(std::string host) = 0;
  virtual asio::awaitable<TxtAnswer> txt(std::string name) = 0;
  // Completes every pending lookup with Status::cancelled.
  virtual void cancel() = 0;
};

// c-ares in the Asio loop. The error names the problem (e.g. an unreadable
// /etc/resolv.conf, a server address c-ares rejects).
// The executor must run on one thread, and lookups must be awaited on it.
// Destroying the resolver completes pending lookups with Status::cancelled;
// their coroutines resume afterwards through the executor, which must still
// be alive then.
tl::expected<std::unique_ptr<Resolver>, std::string> make_ares_resolver(
    asio::any_io_executor executor, ResolverOptions options);

}  // namespace stsrelay::dns
