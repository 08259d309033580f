#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include "smtp/client.hpp"

namespace stsrelay::smtp {

// How long connections are kept for reuse; the defaults are Postfix's
// (smtp_connection_cache_time_limit, smtp_connection_reuse_time_limit).
struct ConnectionCacheLimits {
  // An idle connection is closed after this long: long enough for the next
  // message of a burst, short enough not to hold the MX's slots.
  std::chrono::milliseconds idle_limit{2000};
  // A connection is not parked again once it is this old, so that a busy
  // destination still sees fresh sessions (and fresh DNS) now and then.
  std::chrono::milliseconds lifetime_limit{300000};
  // Idle connections kept per (MX host, TLS requirement).
  std::size_t per_host = 20;
};

// Idle SMTP connections that finished a transaction, kept for the next
// message to the same MX host. A connection is only ever handed back for
// the host name and TLS requirement it was opened with: one that was opened
// opportunistically never serves a domain whose policy demands validated TLS,
// and a certificate checked for one MX name never serves another.
class ConnectionCache {
 public:
  ConnectionCache(asio::any_io_executor executor, ConnectionCacheLimits limits);
  ConnectionCache(const ConnectionCache&) = delete;
  ConnectionCache& operator=(const ConnectionCache&) = delete;
  // close() must have completed: parked connections are watched by
  // coroutines that refer to the cache.
  ~ConnectionCache();

  // The most recently parked connection to `host` opened under
  // `requirement`, once an RSET has shown that it still works (the server
  // may have timed it out meanwhile); nullptr when there is none.
  asio::awaitable<std::unique_ptr<SmtpConnection>> take(const std::string& host,
                                                        TlsRequirement requirement);

  // Keeps a connection for the next message to its host, or QUITs it when it
  // cannot serve one (unusable, too old, too many parked, cache closed).
  asio::awaitable<void> park(std::unique_ptr<SmtpConnection> connection,
                             TlsRequirement requirement);

  // QUITs every parked connection and refuses to park more.
  asio::awaitable<void> close();

  std::size_t parked() const;

 private:
  using Key = std::pair<std::string, TlsRequirement>;
  struct Parked;

  asio::awaitable<void> watch(Key key, std::shared_ptr<Parked> parked);

  asio::any_io_executor executor_;
  ConnectionCacheLimits limits_;
  std::map<Key, std::deque<std::shared_ptr<Parked>>> parked_;
  std::size_t watchers_ = 0;
  asio::steady_timer drained_;
  bool closed_ = false;
};

}  // namespace stsrelay::smtp
