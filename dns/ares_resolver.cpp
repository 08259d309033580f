#include <algorithm>
#include <arpa/nameser.h>
#include <cstring>
#include <mutex>
#include <poll.h>
#include <random>
#include <unordered_map>
#include <utility>

#include <ares.h>
#include <asio/experimental/as_tuple.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "dns/resolver.hpp"

namespace stsrelay::dns {

std::string_view to_string(Status status) {
  switch (status) {
    case Status::ok:
      return "ok";
    case Status::no_data:
      return "no_data";
    case Status::no_such_name:
      return "no_such_name";
    case Status::server_failure:
      return "server_failure";
    case Status::timeout:
      return "timeout";
    case Status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Each server is tried this often; c-ares doubles its per-try timeout after
// every round over the servers.
constexpr int tries_per_server = 2;
constexpr std::chrono::milliseconds shortest_try{50};
// Readiness handled in one go before yielding to the rest of the loop.
constexpr int max_rounds_per_event = 16;
// More addresses than fit in a 64 KiB answer are never needed.
constexpr int max_addresses = 256;

Status status_of(int ares_status) {
  switch (ares_status) {
    case ARES_SUCCESS:
      return Status::ok;
    case ARES_ENODATA:
      return Status::no_data;
    case ARES_ENOTFOUND:
    // A name c-ares cannot even encode (an empty or overlong label) exists nowhere.
    case ARES_EBADNAME:
      return Status::no_such_name;
    case ARES_ETIMEOUT:
      return Status::timeout;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      return Status::cancelled;
    default:
      return Status::server_failure;
  }
}

std::string absolute(std::string name) {
  if (name.size() > 1 && name.back() == '.') {
    name.pop_back();
  }
  return name;
}

// What c-ares reported for one query: its status and the raw answer.
struct RawAnswer {
  Status status = Status::ok;
  int ares_status = ARES_SUCCESS;
  std::vector<unsigned char> bytes;
  std::string detail() const { return ares_strerror(ares_status); }
};

// One query in flight. c-ares owns a reference until it calls back, exactly
// once (answer, failure, ares_cancel or ares_destroy); the awaiting coroutine
// owns the other. The timer is both the lookup's deadline and its wake-up:
// the callback cancels it, so the coroutine resumes through the executor and
// never inside c-ares.
struct PendingQuery {
  explicit PendingQuery(const asio::any_io_executor& executor) : wake(executor) {}
  asio::steady_timer wake;
  bool done = false;
  RawAnswer answer;

  static void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* bytes, int length) {
    std::unique_ptr<std::shared_ptr<PendingQuery>> owner(
        static_cast<std::shared_ptr<PendingQuery>*>(arg));
    PendingQuery& query = **owner;
    query.done = true;
    query.answer.ares_status = status;
    query.answer.status = status_of(status);
    if (bytes != nullptr && length > 0) {
      query.answer.bytes.assign(bytes, bytes + length);
    }
    query.wake.cancel();
  }
};

// A socket c-ares opened, watched by the reactor without being owned by it:
// c-ares closes it, after telling us to forget it.
struct Watcher {
  Watcher(const asio::any_io_executor& executor, ares_socket_t socket)
      : descriptor(executor), fd(socket) {}
  asio::posix::stream_descriptor descriptor;
  ares_socket_t fd;
  bool want_read = false;
  bool want_write = false;
  bool read_armed = false;
  bool write_armed = false;
  bool forgotten = false;

  void forget() {
    forgotten = true;
    std::error_code ignored;
    descriptor.cancel(ignored);
    descriptor.release();  // never close: the fd is c-ares'
  }
};

// The c-ares channel and everything driving it. Shared by the resolver and
// every lookup coroutine, so a coroutine outliving the resolver still finds
// it (shut down) when it resumes.
class Channel : public std::enable_shared_from_this<Channel> {
 public:
  Channel(asio::any_io_executor executor, std::chrono::milliseconds timeout)
      : executor_(std::move(executor)),
        timeout_(timeout),
        timer_(executor_),
        random_(std::random_device{}()) {}

  ~Channel() { shutdown(); }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  tl::expected<void, std::string> start(const ResolverOptions& options);

  void shutdown() {
    if (channel_ == nullptr) {
      return;
    }
    ares_channel channel = std::exchange(channel_, nullptr);
    // Pending queries call back with ARES_EDESTRUCTION; sockets are
    // forgotten through on_socket_state before c-ares closes them.
    ares_destroy(channel);
    for (auto& [fd, watcher] : watchers_) {
      watcher->forget();
    }
    watchers_.clear();
    timer_.cancel();
  }

  void cancel() {
    if (channel_ != nullptr) {
      ares_cancel(channel_);
      follow_timeout();
    }
  }

  // Sends one query; the returned state completes when c-ares calls back.
  std::shared_ptr<PendingQuery> send(const std::string& name, int type) {
    auto query = std::make_shared<PendingQuery>(executor_);
    query->wake.expires_after(timeout_);
    if (channel_ == nullptr) {
      query->done = true;
      query->answer.ares_status = ARES_EDESTRUCTION;
      query->answer.status = Status::cancelled;
      return query;
    }
    ares_query(channel_, name.c_str(), ns_c_in, type, &PendingQuery::on_answer,
               new std::shared_ptr<PendingQuery>(query));
    follow_timeout();
    return query;
  }

  static asio::awaitable<RawAnswer> wait(std::shared_ptr<PendingQuery> query) {
    if (!query->done) {
      co_await query->wake.async_wait(use_tuple);
    }
    if (!query->done) {
      // Our own deadline: c-ares' schedule was sized to end by then, but the
      // whole lookup is bounded here whatever the servers do. The query's
      // eventual callback lands in the state it still owns.
      RawAnswer late;
      late.status = Status::timeout;
      late.ares_status = ARES_ETIMEOUT;
      co_return late;
    }
    co_return std::move(query->answer);
  }

  std::mt19937& random() { return random_; }

 private:
  static void on_socket_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<Channel*>(data)->socket_state(fd, readable != 0, writable != 0);
  }

  void socket_state(ares_socket_t fd, bool readable, bool writable) {
    auto found = watchers_.find(fd);
    if (!readable && !writable) {
      if (found != watchers_.end()) {
        found->second->forget();
        watchers_.erase(found);
      }
      return;
    }
    if (found == watchers_.end()) {
      auto watcher = std::make_shared<Watcher>(executor_, fd);
      std::error_code error;
      watcher->descriptor.assign(fd, error);
      if (error) {
        // Unwatchable: the query on it ends by c-ares' own timeout.
        return;
      }
      found = watchers_.emplace(fd, std::move(watcher)).first;
    }
    found->second->want_read = readable;
    found->second->want_write = writable;
    arm(found->second);
  }

  void arm(const std::shared_ptr<Watcher>& watcher) {
    if (watcher->want_read && !watcher->read_armed) {
      watcher->read_armed = true;
      watcher->descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                                     [weak = weak_from_this(), watcher](std::error_code error) {
                                       watcher->read_armed = false;
                                       if (auto self = weak.lock();
                                           self && error != asio::error::operation_aborted) {
                                         self->ready(watcher, true, false);
                                       }
                                     });
    }
    if (watcher->want_write && !watcher->write_armed) {
      watcher->write_armed = true;
      watcher->descriptor.async_wait(asio::posix::descriptor_base::wait_write,
                                     [weak = weak_from_this(), watcher](std::error_code error) {
                                       watcher->write_armed = false;
                                       if (auto self = weak.lock();
                                           self && error != asio::error::operation_aborted) {
                                         self->ready(watcher, false, true);
                                       }
                                     });
    }
  }

  // The reactor is edge-triggered, while c-ares may leave bytes unread (it
  // reads a TCP answer in pieces, one per call): ask poll() whether more is
  // ready before waiting for the next edge, as a level-triggered loop would.
  void ready(const std::shared_ptr<Watcher>& watcher, bool readable, bool writable) {
    for (int round = 0; round < max_rounds_per_event; ++round) {
      if (channel_ == nullptr || watcher->forgotten) {
        return;
      }
      readable = readable && watcher->want_read;
      writable = writable && watcher->want_write;
      if (!readable && !writable) {
        break;
      }
      ares_process_fd(channel_, readable ? watcher->fd : ARES_SOCKET_BAD,
                      writable ? watcher->fd : ARES_SOCKET_BAD);
      if (watcher->forgotten) {
        break;
      }
      pollfd probe{};
      probe.fd = watcher->fd;
      probe.events = static_cast<short>((watcher->want_read ? POLLIN : 0) |
                                        (watcher->want_write ? POLLOUT : 0));
      if (probe.events == 0 || ::poll(&probe, 1, 0) <= 0) {
        break;
      }
      readable = (probe.revents & (POLLIN | POLLERR | POLLHUP)) != 0;
      writable = (probe.revents & (POLLOUT | POLLERR | POLLHUP)) != 0;
      if (round + 1 == max_rounds_per_event) {
        // Still busy: continue later instead of starving the loop.
        asio::post(executor_, [weak = weak_from_this(), watcher, readable, writable] {
          if (auto self = weak.lock()) {
            self->ready(watcher, readable, writable);
          }
        });
        follow_timeout();
        return;
      }
    }
    if (channel_ != nullptr && !watcher->forgotten) {
      arm(watcher);
    }
    follow_timeout();
  }

  // One timer follows ares_timeout: c-ares' next retransmission or expiry.
  void follow_timeout() {
    if (channel_ == nullptr) {
      return;
    }
    timeval next{};
    if (ares_timeout(channel_, nullptr, &next) == nullptr) {
      timer_.cancel();
      return;
    }
    timer_.expires_after(std::chrono::seconds(next.tv_sec) +
                         std::chrono::microseconds(next.tv_usec));
    timer_.async_wait([weak = weak_from_this()](std::error_code error) {
      auto self = weak.lock();
      if (!self || error == asio::error::operation_aborted || self->channel_ == nullptr) {
        return;
      }
      ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      self->follow_timeout();
    });
  }

  asio::any_io_executor executor_;
  std::chrono::milliseconds timeout_;
  asio::steady_timer timer_;
  std::mt19937 random_;
  ares_channel channel_ = nullptr;
  std::unordered_map<ares_socket_t, std::shared_ptr<Watcher>> watchers_;
};

std::string server_list(const std::vector<asio::ip::udp::endpoint>& servers) {
  std::string csv;
  for (const auto& server : servers) {
    if (!csv.empty()) {
      csv += ',';
    }
    if (server.address().is_v6()) {
      csv += "[" + server.address().to_string() + "]";
    } else {
      csv += server.address().to_string();
    }
    csv += ":" + std::to_string(server.port());
  }
  return csv;
}

tl::expected<void, std::string> check_servers(const std::vector<asio::ip::udp::endpoint>& servers) {
  for (const auto& server : servers) {
    std::string shown = server_list({server});
    if (server.port() == 0) {
      return tl::make_unexpected("DNS server " + shown + " has port 0");
    }
    if (server.address().is_unspecified() || server.address().is_multicast()) {
      return tl::make_unexpected("DNS server " + shown + " is not a unicast address");
    }
    if (server.address().is_v6() && server.address().to_v6().scope_id() != 0) {
      return tl::make_unexpected("DNS server " + shown +
                                 ": scoped IPv6 addresses are not supported");
    }
  }
  return {};
}

// How many servers /etc/resolv.conf names, to size the per-try timeout.
tl::expected<int, std::string> system_server_count() {
  ares_channel probe = nullptr;
  ares_options options{};
  int status = ares_init_options(&probe, &options, 0);
  if (status != ARES_SUCCESS) {
    return tl::make_unexpected(std::string("cannot read the system DNS configuration: ") +
                               ares_strerror(status));
  }
  ares_addr_port_node* servers = nullptr;
  int count = 0;
  if (ares_get_servers_ports(probe, &servers) == ARES_SUCCESS) {
    for (auto* node = servers; node != nullptr; node = node->next) {
      ++count;
    }
    ares_free_data(servers);
  }
  ares_destroy(probe);
  return std::max(count, 1);
}

tl::expected<void, std::string> Channel::start(const ResolverOptions& options) {
  static std::once_flag library_ready;
  static int library_status = ARES_SUCCESS;
  std::call_once(library_ready, [] { library_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (library_status != ARES_SUCCESS) {
    return tl::make_unexpected(std::string("c-ares: ") + ares_strerror(library_status));
  }
  if (timeout_ <= std::chrono::milliseconds::zero()) {
    return tl::make_unexpected("the DNS timeout must be positive");
  }
  if (auto checked = check_servers(options.servers); !checked) {
    return checked;
  }
  int server_count = static_cast<int>(options.servers.size());
  if (server_count == 0) {
    auto counted = system_server_count();
    if (!counted) {
      return tl::make_unexpected(counted.error());
    }
    server_count = *counted;
  }

  // With n servers and t tries, c-ares waits n * (1 + 2 + ... + 2^(t-1))
  // per-try timeouts before giving up; size the try so that ends within the
  // lookup's timeout. The coroutine's own deadline is the hard bound.
  auto rounds = server_count * ((1 << tries_per_server) - 1);
  auto per_try = std::max(timeout_ / rounds, shortest_try);

  ares_options ares{};
  ares.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_EDNS;
  ares.ednspsz = 1232;  // the DNS flag day 2020 size: no fragmentation
  ares.timeout = static_cast<int>(per_try.count());
  ares.tries = tries_per_server;
  ares.sock_state_cb = &Channel::on_socket_state;
  ares.sock_state_cb_data = this;
  int mask = ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
             ARES_OPT_SOCK_STATE_CB;
  int status = ares_init_options(&channel_, &ares, mask);
  if (status != ARES_SUCCESS) {
    channel_ = nullptr;
    return tl::make_unexpected(std::string("cannot start the DNS resolver: ") +
                               ares_strerror(status));
  }
  if (!options.servers.empty()) {
    std::string csv = server_list(options.servers);
    status = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (status != ARES_SUCCESS) {
      shutdown();
      return tl::make_unexpected("c-ares rejects the DNS servers " + csv + ": " +
                                 ares_strerror(status));
    }
  }
  return {};
}

MxAnswer parse_mx(const RawAnswer& raw, std::mt19937& random) {
  MxAnswer result;
  if (raw.status != Status::ok) {
    result.status = raw.status;
    result.detail = raw.detail();
    return result;
  }
  ares_mx_reply* replies = nullptr;
  int status = ares_parse_mx_reply(raw.bytes.data(), static_cast<int>(raw.bytes.size()), &replies);
  if (status != ARES_SUCCESS) {
    result.status = status == ARES_ENODATA ? Status::no_data : Status::server_failure;
    result.detail = ares_strerror(status);
    return result;
  }
  std::size_t records = 0;
  bool null_record = false;
  for (auto* reply = replies; reply != nullptr; reply = reply->next) {
    ++records;
    std::string host = reply->host;
    if (!host.empty() && host.back() == '.') {
      host.pop_back();
    }
    if (host.empty()) {
      null_record = null_record || reply->priority == 0;
      continue;  // the root names no host
    }
    result.hosts.push_back(MxHost{std::move(host), reply->priority});
  }
  ares_free_data(replies);
  if (records == 0) {  // e.g. only a CNAME to a name without MX
    result.status = Status::no_data;
    result.detail = ares_strerror(ARES_ENODATA);
    return result;
  }

  // RFC 7505: "0 ." alone declares that the domain accepts no mail. Any
  // other answer naming only the root leaves no host to deliver to either.
  if ((null_record && records == 1) || result.hosts.empty()) {
    result.hosts.clear();
    result.null_mx = true;
    return result;
  }
  std::shuffle(result.hosts.begin(), result.hosts.end(), random);
  std::stable_sort(result.hosts.begin(), result.hosts.end(),
                   [](const MxHost& a, const MxHost& b) { return a.preference < b.preference; });
  return result;
}

AddressAnswer parse_addresses(const RawAnswer& raw, int type) {
  AddressAnswer result;
  result.status = raw.status;
  if (raw.status != Status::ok) {
    result.detail = raw.detail();
    return result;
  }
  int count = max_addresses;
  int status = ARES_SUCCESS;
  const auto* bytes = raw.bytes.data();
  auto length = static_cast<int>(raw.bytes.size());
  if (type == ns_t_aaaa) {
    std::vector<ares_addr6ttl> found(max_addresses);
    status = ares_parse_aaaa_reply(bytes, length, nullptr, found.data(), &count);
    for (int i = 0; status == ARES_SUCCESS && i < count; ++i) {
      asio::ip::address_v6::bytes_type address;
      std::memcpy(address.data(), &found[i].ip6addr, address.size());
      result.addresses.emplace_back(asio::ip::address_v6(address));
    }
  } else {
    std::vector<ares_addrttl> found(max_addresses);
    status = ares_parse_a_reply(bytes, length, nullptr, found.data(), &count);
    for (int i = 0; status == ARES_SUCCESS && i < count; ++i) {
      asio::ip::address_v4::bytes_type address;
      std::memcpy(address.data(), &found[i].ipaddr, address.size());
      result.addresses.emplace_back(asio::ip::address_v4(address));
    }
  }
  if (status == ARES_SUCCESS && result.addresses.empty()) {
    status = ARES_ENODATA;
  }
  if (status != ARES_SUCCESS) {
    result.status = status == ARES_ENODATA ? Status::no_data : Status::server_failure;
    result.detail = ares_strerror(status);
  }
  return result;
}

// A and AAAA together: records from either win; otherwise the more telling
// of the two outcomes.
AddressAnswer combine(AddressAnswer v6, AddressAnswer v4) {
  AddressAnswer result;
  if (v6.status == Status::ok || v4.status == Status::ok) {
    result.addresses = std::move(v6.addresses);
    result.addresses.insert(result.addresses.end(), v4.addresses.begin(), v4.addresses.end());
    return result;
  }
  auto either = [&](Status status) { return v6.status == status || v4.status == status; };
  if (either(Status::cancelled)) {
    result.status = Status::cancelled;
  } else if (either(Status::server_failure)) {
    result.status = Status::server_failure;
  } else if (either(Status::timeout)) {
    result.status = Status::timeout;
  } else if (either(Status::no_data)) {
    // The name exists for one of the two: not NXDOMAIN.
    result.status = Status::no_data;
  } else {
    result.status = Status::no_such_name;
  }
  result.detail = "AAAA: " + v6.detail + "; A: " + v4.detail;
  return result;
}

TxtAnswer parse_txt(const RawAnswer& raw) {
  TxtAnswer result;
  if (raw.status != Status::ok) {
    result.status = raw.status;
    result.detail = raw.detail();
    return result;
  }
  ares_txt_ext* strings = nullptr;
  int status =
      ares_parse_txt_reply_ext(raw.bytes.data(), static_cast<int>(raw.bytes.size()), &strings);
  if (status != ARES_SUCCESS) {
    result.status = status == ARES_ENODATA ? Status::no_data : Status::server_failure;
    result.detail = ares_strerror(status);
    return result;
  }
  for (auto* string = strings; string != nullptr; string = string->next) {
    if (string->record_start != 0 || result.records.empty()) {
      result.records.emplace_back();
    }
    result.records.back().append(reinterpret_cast<const char*>(string->txt), string->length);
  }
  ares_free_data(strings);
  if (result.records.empty()) {
    result.status = Status::no_data;
    result.detail = ares_strerror(ARES_ENODATA);
  }
  return result;
}

// The lookups take the channel by value, so the awaitable they return keeps
// it alive even when the resolver is gone before it is awaited.
asio::awaitable<MxAnswer> lookup_mx(std::shared_ptr<Channel> channel, std::string domain) {
  auto query = channel->send(absolute(std::move(domain)), ns_t_mx);
  RawAnswer raw = co_await Channel::wait(query);
  co_return parse_mx(raw, channel->random());
}

asio::awaitable<AddressAnswer> lookup_addresses(std::shared_ptr<Channel> channel,
                                                std::string host) {
  std::string name = absolute(std::move(host));
  auto v6_query = channel->send(name, ns_t_aaaa);
  auto v4_query = channel->send(name, ns_t_a);
  RawAnswer v6_raw = co_await Channel::wait(v6_query);
  RawAnswer v4_raw = co_await Channel::wait(v4_query);
  co_return combine(parse_addresses(v6_raw, ns_t_aaaa), parse_addresses(v4_raw, ns_t_a));
}

asio::awaitable<TxtAnswer> lookup_txt(std::shared_ptr<Channel> channel, std::string name) {
  auto query = channel->send(absolute(std::move(name)), ns_t_txt);
  RawAnswer raw = co_await Channel::wait(query);
  co_return parse_txt(raw);
}

class AresResolver final : public Resolver {
 public:
  explicit AresResolver(std::shared_ptr<Channel> channel) : channel_(std::move(channel)) {}
  // Pending lookups complete with Status::cancelled; their coroutines keep
  // the (shut down) channel alive until they have resumed.
  ~AresResolver() override { channel_->shutdown(); }
  AresResolver(const AresResolver&) = delete;
  AresResolver& operator=(const AresResolver&) = delete;

  asio::awaitable<MxAnswer> mx(std::string domain) override {
    return lookup_mx(channel_, std::move(domain));
  }
  asio::awaitable<AddressAnswer> addresses(std::string host) override {
    return lookup_addresses(channel_, std::move(host));
  }
  asio::awaitable<TxtAnswer> txt(std::string name) override {
    return lookup_txt(channel_, std::move(name));
  }
  void cancel() override { channel_->cancel(); }

 private:
  std::shared_ptr<Channel> channel_;
};

}  // namespace

tl::expected<std::unique_ptr<Resolver>, std::string> make_ares_resolver(
    asio::any_io_executor executor, ResolverOptions options) {
  auto channel = std::make_shared<Channel>(std::move(executor), options.timeout);
  auto started = channel->start(options);
  if (!started) {
    return tl::make_unexpected(started.error());
  }
  return std::make_unique<AresResolver>(std::move(channel));
}

}  // namespace stsrelay::dns
