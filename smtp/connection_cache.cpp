#include "smtp/connection_cache.hpp"

#include <algorithm>
#include <cassert>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

namespace stsrelay::smtp {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
}  // namespace

struct ConnectionCache::Parked {
  Parked(std::unique_ptr<SmtpConnection> parked, asio::any_io_executor executor)
      : connection(std::move(parked)), expiry(executor) {}

  std::unique_ptr<SmtpConnection> connection;  // null once taken
  asio::steady_timer expiry;
};

ConnectionCache::ConnectionCache(asio::any_io_executor executor, ConnectionCacheLimits limits)
    : executor_(executor), limits_(limits), drained_(executor) {
  drained_.expires_at(asio::steady_timer::time_point::max());
}

ConnectionCache::~ConnectionCache() {
  assert(watchers_ == 0 && "ConnectionCache destroyed before close() completed");
}

asio::awaitable<std::unique_ptr<SmtpConnection>> ConnectionCache::take(const std::string& host,
                                                                       TlsRequirement requirement) {
  auto found = parked_.find(Key{host, requirement});
  while (found != parked_.end() && !found->second.empty()) {
    auto parked = found->second.back();
    found->second.pop_back();
    if (found->second.empty()) {
      parked_.erase(found);
    }
    std::unique_ptr<SmtpConnection> connection = std::move(parked->connection);
    parked->expiry.cancel();  // its watcher sees it taken and ends
    const bool alive = co_await connection->reset();
    if (alive) {
      co_return connection;
    }
    co_await connection->quit();
    // Another may have been parked or taken meanwhile.
    found = parked_.find(Key{host, requirement});
  }
  co_return nullptr;
}

asio::awaitable<void> ConnectionCache::park(std::unique_ptr<SmtpConnection> connection,
                                            TlsRequirement requirement) {
  Key key{connection->host(), requirement};
  const auto age = std::chrono::steady_clock::now() - connection->opened_at();
  auto& queue = parked_[key];
  if (closed_ || !connection->usable() || age >= limits_.lifetime_limit ||
      queue.size() >= limits_.per_host) {
    if (queue.empty()) {
      parked_.erase(key);
    }
    co_await connection->quit();
    co_return;
  }
  auto parked = std::make_shared<Parked>(std::move(connection), executor_);
  parked->expiry.expires_after(limits_.idle_limit);
  queue.push_back(parked);
  ++watchers_;
  asio::co_spawn(executor_, watch(std::move(key), std::move(parked)),
                 [this](std::exception_ptr failure) {
                   --watchers_;
                   drained_.cancel();
                   if (failure) {
                     std::rethrow_exception(failure);
                   }
                 });
}

asio::awaitable<void> ConnectionCache::watch(Key key, std::shared_ptr<Parked> parked) {
  co_await parked->expiry.async_wait(use_tuple);
  if (!parked->connection) {
    co_return;  // taken
  }
  // Idle too long, or the cache is closing.
  auto found = parked_.find(key);
  if (found != parked_.end()) {
    std::erase(found->second, parked);
    if (found->second.empty()) {
      parked_.erase(found);
    }
  }
  std::unique_ptr<SmtpConnection> connection = std::move(parked->connection);
  co_await connection->quit();
}

asio::awaitable<void> ConnectionCache::close() {
  closed_ = true;
  for (auto& [key, queue] : parked_) {
    for (auto& parked : queue) {
      parked->expiry.cancel();
    }
  }
  while (watchers_ > 0) {
    co_await drained_.async_wait(use_tuple);
  }
}

std::size_t ConnectionCache::parked() const {
  std::size_t count = 0;
  for (const auto& [key, queue] : parked_) {
    count += queue.size();
  }
  return count;
}

}  // namespace stsrelay::smtp
