#include "tests/support/fake_dns_server.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace stsrelay::testing {

namespace {

using asio::ip::tcp;
using asio::ip::udp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr std::uint32_t record_ttl = 300;
constexpr std::size_t header_size = 12;
constexpr std::size_t classic_udp_limit = 512;
constexpr std::uint16_t type_opt = 41;
constexpr int max_cname_chain = 8;

std::string canonical(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  std::string lowered(name);
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lowered;
}

void put16(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xff));
}

void put32(std::string& out, std::uint32_t value) {
  put16(out, static_cast<std::uint16_t>(value >> 16));
  put16(out, static_cast<std::uint16_t>(value & 0xffff));
}

std::uint16_t get16(std::string_view bytes, std::size_t offset) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(bytes[offset]) << 8) |
                                    static_cast<unsigned char>(bytes[offset + 1]));
}

// Uncompressed wire form; "" and "." are the root.
std::string encode_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  std::string out;
  while (!name.empty()) {
    std::size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63) {
      throw std::invalid_argument("bad DNS name in test zone: " + std::string(name));
    }
    out.push_back(static_cast<char>(label.size()));
    out.append(label);
    name = dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
  }
  out.push_back('\0');
  return out;
}

struct Record {
  DnsType type;
  std::string rdata;  // wire form
};

struct Entry {
  std::vector<Record> records;
  std::optional<DnsRcode> rcode;
  std::map<std::uint16_t, DnsRcode> rcode_by_type;
  bool unresponsive = false;
  std::set<std::uint16_t> unresponsive_types;
  bool truncate_udp = false;

  std::optional<DnsRcode> rcode_for(std::uint16_t type) const {
    auto found = rcode_by_type.find(type);
    return found != rcode_by_type.end() ? std::optional(found->second) : rcode;
  }
  bool ignores(std::uint16_t type) const {
    return unresponsive || unresponsive_types.count(type) != 0;
  }
};

struct QueryCounts {
  std::size_t all = 0;
  std::size_t tcp = 0;
};

struct Question {
  std::uint16_t id = 0;
  bool recursion_desired = false;
  std::string name;      // canonical
  std::string_view raw;  // qname, qtype, qclass as received
  std::uint16_t type = 0;
  std::size_t udp_limit = classic_udp_limit;
};

std::optional<Question> parse_question(std::string_view query) {
  if (query.size() < header_size || get16(query, 4) != 1) {
    return std::nullopt;
  }
  Question question;
  question.id = get16(query, 0);
  question.recursion_desired = (static_cast<unsigned char>(query[2]) & 0x01) != 0;
  std::size_t offset = header_size;
  std::string dotted;
  for (;;) {
    if (offset >= query.size()) {
      return std::nullopt;
    }
    auto length = static_cast<unsigned char>(query[offset]);
    if (length == 0) {
      ++offset;
      break;
    }
    if (length > 63 || offset + 1 + length > query.size()) {
      return std::nullopt;
    }
    if (!dotted.empty()) {
      dotted.push_back('.');
    }
    dotted.append(query.substr(offset + 1, length));
    offset += 1 + length;
  }
  if (offset + 4 > query.size()) {
    return std::nullopt;
  }
  question.name = canonical(dotted);
  question.type = get16(query, offset);
  question.raw = query.substr(header_size, offset + 4 - header_size);
  offset += 4;
  // An EDNS OPT record (root owner) in the additional section raises the UDP limit.
  if (get16(query, 10) >= 1 && offset + 5 <= query.size() && query[offset] == '\0' &&
      get16(query, offset + 1) == type_opt) {
    question.udp_limit = std::max<std::size_t>(classic_udp_limit, get16(query, offset + 3));
  }
  return question;
}

std::string header(const Question& question, DnsRcode rcode, bool truncated,
                   std::uint16_t answer_count) {
  std::string out;
  put16(out, question.id);
  std::uint8_t flags_high = 0x80 | 0x04;  // QR, AA
  if (truncated) {
    flags_high |= 0x02;
  }
  if (question.recursion_desired) {
    flags_high |= 0x01;
  }
  out.push_back(static_cast<char>(flags_high));
  out.push_back(static_cast<char>(0x80 | static_cast<std::uint8_t>(rcode)));  // RA, rcode
  put16(out, 1);
  put16(out, answer_count);
  put16(out, 0);
  put16(out, 0);
  return out;
}

}  // namespace

struct FakeDnsServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  udp::socket udp_socket{io};
  std::thread thread;

  mutable std::mutex mutex;
  std::map<std::string, Entry> zone;
  std::map<std::string, QueryCounts> counts;  // names outside the zone too
  udp::endpoint local;

  explicit Impl(const asio::ip::address& address) { bind_same_port(address); }

  void bind_same_port(const asio::ip::address& address) {
    // Port 0 picks a free TCP port; the same UDP port is usually free too.
    std::error_code last_error;
    for (int attempt = 0; attempt < 50; ++attempt) {
      tcp::acceptor candidate(io);
      tcp::endpoint wanted(address, 0);
      candidate.open(wanted.protocol());
      candidate.set_option(tcp::acceptor::reuse_address(true));
      candidate.bind(wanted);  // throws when the address is unusable
      candidate.listen();
      udp::socket datagrams(io);
      datagrams.open(address.is_v6() ? udp::v6() : udp::v4());
      datagrams.bind(udp::endpoint(address, candidate.local_endpoint().port()), last_error);
      if (!last_error) {
        acceptor = std::move(candidate);
        udp_socket = std::move(datagrams);
        local = udp_socket.local_endpoint();
        return;
      }
    }
    throw std::system_error(last_error, "FakeDnsServer: no port free for both UDP and TCP");
  }

  Entry& entry(std::string_view name) { return zone[canonical(name)]; }

  void add(std::string_view name, DnsType type, std::string rdata) {
    std::lock_guard lock(mutex);
    entry(name).records.push_back(Record{type, std::move(rdata)});
  }

  // The response to one query, or nothing when the name is unresponsive.
  std::optional<std::string> answer(std::string_view query, bool over_tcp) {
    auto question = parse_question(query);
    if (!question) {
      return std::nullopt;
    }
    std::lock_guard lock(mutex);
    QueryCounts& count = counts[question->name];
    ++count.all;
    if (over_tcp) {
      ++count.tcp;
    }
    auto found = zone.find(question->name);
    if (found != zone.end()) {
      if (found->second.ignores(question->type)) {
        return std::nullopt;
      }
      if (auto rcode = found->second.rcode_for(question->type)) {
        return header(*question, *rcode, false, 0) + std::string(question->raw);
      }
      if (found->second.truncate_udp && !over_tcp) {
        return header(*question, DnsRcode::noerror, true, 0) + std::string(question->raw);
      }
    }

    std::string answers;
    std::uint16_t answer_count = 0;
    DnsRcode rcode = DnsRcode::noerror;
    std::string owner = "\xc0\x0c";  // the question's name
    std::string current = question->name;
    for (int link = 0; link <= max_cname_chain; ++link) {
      auto at = zone.find(current);
      if (at == zone.end() || at->second.records.empty()) {
        rcode = DnsRcode::nxdomain;
        break;
      }
      const Record* alias = nullptr;
      bool matched = false;
      for (const Record& record : at->second.records) {
        if (static_cast<std::uint16_t>(record.type) == question->type) {
          answers += owner;
          put16(answers, question->type);
          put16(answers, 1);  // IN
          put32(answers, record_ttl);
          put16(answers, static_cast<std::uint16_t>(record.rdata.size()));
          answers += record.rdata;
          ++answer_count;
          matched = true;
        } else if (record.type == DnsType::cname) {
          alias = &record;
        }
      }
      if (matched || alias == nullptr) {
        break;
      }
      answers += owner;
      put16(answers, static_cast<std::uint16_t>(DnsType::cname));
      put16(answers, 1);
      put32(answers, record_ttl);
      put16(answers, static_cast<std::uint16_t>(alias->rdata.size()));
      answers += alias->rdata;
      ++answer_count;
      owner = alias->rdata;
      current = decode_uncompressed(alias->rdata);
    }

    std::string response =
        header(*question, rcode, false, answer_count) + std::string(question->raw) + answers;
    if (!over_tcp && response.size() > question->udp_limit) {
      return header(*question, rcode, true, 0) + std::string(question->raw);
    }
    return response;
  }

  static std::string decode_uncompressed(std::string_view wire) {
    std::string dotted;
    std::size_t offset = 0;
    while (offset < wire.size() && wire[offset] != '\0') {
      auto length = static_cast<unsigned char>(wire[offset]);
      if (!dotted.empty()) {
        dotted.push_back('.');
      }
      dotted.append(wire.substr(offset + 1, length));
      offset += 1 + length;
    }
    return canonical(dotted);
  }

  asio::awaitable<void> serve_udp() {
    std::array<char, 65536> buffer;
    for (;;) {
      udp::endpoint client;
      auto [error, length] =
          co_await udp_socket.async_receive_from(asio::buffer(buffer), client, use_tuple);
      if (error == asio::error::operation_aborted) {
        co_return;
      }
      if (error) {
        continue;  // e.g. ICMP errors from an earlier reply
      }
      auto response = answer(std::string_view(buffer.data(), length), false);
      if (response) {
        co_await udp_socket.async_send_to(asio::buffer(*response), client, use_tuple);
      }
    }
  }

  asio::awaitable<void> serve_tcp() {
    for (;;) {
      auto [error, connection] = co_await acceptor.async_accept(use_tuple);
      if (error == asio::error::operation_aborted) {
        co_return;
      }
      if (!error) {
        asio::co_spawn(io, serve_connection(std::move(connection)), rethrow);
      }
    }
  }

  asio::awaitable<void> serve_connection(tcp::socket connection) {
    for (;;) {
      std::array<unsigned char, 2> length_bytes;
      auto [length_error, ignored] =
          co_await asio::async_read(connection, asio::buffer(length_bytes), use_tuple);
      if (length_error) {
        co_return;
      }
      std::string query(static_cast<std::size_t>(length_bytes[0] << 8 | length_bytes[1]), '\0');
      auto [query_error, query_length] =
          co_await asio::async_read(connection, asio::buffer(query), use_tuple);
      if (query_error) {
        co_return;
      }
      auto response = answer(query, true);
      if (!response) {
        continue;
      }
      std::string framed;
      put16(framed, static_cast<std::uint16_t>(response->size()));
      framed += *response;
      auto [write_error, written] =
          co_await asio::async_write(connection, asio::buffer(framed), use_tuple);
      if (write_error) {
        co_return;
      }
    }
  }

  // A bug in the fake must fail the test run loudly, not hang it.
  static void rethrow(std::exception_ptr failure) {
    if (failure) {
      std::rethrow_exception(failure);
    }
  }
};

FakeDnsServer::FakeDnsServer(asio::ip::address address) : impl_(std::make_unique<Impl>(address)) {
  asio::co_spawn(impl_->io, impl_->serve_udp(), Impl::rethrow);
  asio::co_spawn(impl_->io, impl_->serve_tcp(), Impl::rethrow);
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

FakeDnsServer::~FakeDnsServer() {
  impl_->io.stop();
  impl_->thread.join();
}

asio::ip::udp::endpoint FakeDnsServer::endpoint() const {
  return impl_->local;
}

std::string FakeDnsServer::server_string() const {
  auto local = endpoint();
  std::string address = local.address().to_string();
  if (local.address().is_v6()) {
    address = "[" + address + "]";
  }
  return address + ":" + std::to_string(local.port());
}

void FakeDnsServer::add_mx(std::string_view name, std::uint16_t preference, std::string_view host) {
  std::string rdata;
  put16(rdata, preference);
  rdata += encode_name(host);
  impl_->add(name, DnsType::mx, std::move(rdata));
}

void FakeDnsServer::add_a(std::string_view name, std::string_view ipv4) {
  auto bytes = asio::ip::make_address_v4(std::string(ipv4)).to_bytes();
  impl_->add(name, DnsType::a, std::string(bytes.begin(), bytes.end()));
}

void FakeDnsServer::add_aaaa(std::string_view name, std::string_view ipv6) {
  auto bytes = asio::ip::make_address_v6(std::string(ipv6)).to_bytes();
  impl_->add(name, DnsType::aaaa, std::string(bytes.begin(), bytes.end()));
}

void FakeDnsServer::add_txt(std::string_view name, std::vector<std::string> strings) {
  std::string rdata;
  for (const std::string& text : strings) {
    if (text.size() > 255) {
      throw std::invalid_argument("a TXT character-string holds at most 255 bytes");
    }
    rdata.push_back(static_cast<char>(text.size()));
    rdata += text;
  }
  impl_->add(name, DnsType::txt, std::move(rdata));
}

void FakeDnsServer::add_cname(std::string_view name, std::string_view target) {
  impl_->add(name, DnsType::cname, encode_name(target));
}

void FakeDnsServer::set_rcode(std::string_view name, DnsRcode rcode) {
  std::lock_guard lock(impl_->mutex);
  impl_->entry(name).rcode = rcode;
}

void FakeDnsServer::set_rcode(std::string_view name, DnsType type, DnsRcode rcode) {
  std::lock_guard lock(impl_->mutex);
  impl_->entry(name).rcode_by_type[static_cast<std::uint16_t>(type)] = rcode;
}

void FakeDnsServer::set_unresponsive(std::string_view name) {
  std::lock_guard lock(impl_->mutex);
  impl_->entry(name).unresponsive = true;
}

void FakeDnsServer::set_unresponsive(std::string_view name, DnsType type) {
  std::lock_guard lock(impl_->mutex);
  impl_->entry(name).unresponsive_types.insert(static_cast<std::uint16_t>(type));
}

void FakeDnsServer::set_truncate_udp(std::string_view name) {
  std::lock_guard lock(impl_->mutex);
  impl_->entry(name).truncate_udp = true;
}

void FakeDnsServer::remove_records(std::string_view name, DnsType type) {
  std::lock_guard lock(impl_->mutex);
  auto& records = impl_->entry(name).records;
  std::erase_if(records, [type](const Record& record) { return record.type == type; });
}

void FakeDnsServer::remove_name(std::string_view name) {
  std::lock_guard lock(impl_->mutex);
  impl_->zone.erase(canonical(name));
}

std::size_t FakeDnsServer::query_count(std::string_view name) const {
  std::lock_guard lock(impl_->mutex);
  auto found = impl_->counts.find(canonical(name));
  return found == impl_->counts.end() ? 0 : found->second.all;
}

std::size_t FakeDnsServer::tcp_query_count(std::string_view name) const {
  std::lock_guard lock(impl_->mutex);
  auto found = impl_->counts.find(canonical(name));
  return found == impl_->counts.end() ? 0 : found->second.tcp;
}

}  // namespace stsrelay::testing
