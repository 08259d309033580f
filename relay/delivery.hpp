#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include "dns/resolver.hpp"
#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"
#include "queue/retry_schedule.hpp"
#include "queue/store.hpp"
#include "smtp/client.hpp"
#include "smtp/connection_cache.hpp"
#include "sts/policy_engine.hpp"
#include "sts/tls_session_counts.hpp"

namespace stsrelay::relay {

struct DeliverySettings {
  std::string hostname;  // the reporting MTA in bounces
  std::uint16_t port = 25;
  std::size_t max_connections = 200;
  std::size_t max_connections_per_domain = 20;
  smtp::ClientOptions client;
  // Connections kept after a transaction for the next message to the same
  // MX host; per_host follows max_connections_per_domain.
  smtp::ConnectionCacheLimits connection_cache;
  queue::RetrySettings retry;
  // How often the queue is looked at when nothing wakes the engine.
  std::chrono::milliseconds poll_interval{1000};
  // The least time between two passes over the queue, however often woken.
  std::chrono::milliseconds min_scan_interval{50};
  std::size_t batch_limit = 1000;  // due recipients read per pass
};

// Moves queued mail to the recipients' MX hosts: one attempt per (message,
// recipient domain) at a time, within the connection limits; each attempt
// resolves the MX hosts, consults the MTA-STS policy, tries the hosts in
// preference order with the TLS the policy demands, records every
// recipient's outcome through the group-committing writer (with a DSN to
// the sender for bounces) and logs one line per attempt.
class DeliveryEngine {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  DeliveryEngine(
      asio::any_io_executor executor, DeliverySettings settings, queue::Store& reader,
      queue::GroupCommitWriter& writer, queue::QueueIdGenerator& ids, dns::Resolver& resolver,
      sts::PolicyEngine* policies, Clock clock = [] { return std::chrono::system_clock::now(); });

  void start();
  // Look at the queue now (new mail arrived, an attempt finished).
  void wake();
  // Every deferred recipient is due now (`stsrelay queue flush`); returns
  // how many recipients were waiting.
  tl::expected<std::size_t, std::string> flush();
  // Stops starting attempts, waits for those in flight and closes the
  // connections kept for reuse.
  asio::awaitable<void> stop();

  std::size_t attempts_in_flight() const { return in_flight_.size(); }
  std::size_t idle_connections() const { return connections_.parked(); }
  // The RFC 8460 tallies of the TLS sessions attempts made, per policy.
  sts::TlsSessionCounts& tls_sessions() { return tls_sessions_; }

 private:
  struct Group {
    std::string message_id;
    std::string domain;
    std::vector<queue::DueRecipient> recipients;
  };

  asio::awaitable<void> schedule();
  void start_due();
  bool has_slot(const std::string& domain) const;
  void launch(Group group);
  void start_waiting(const std::string& freed_domain);
  asio::awaitable<void> attempt(Group group);
  asio::awaitable<void> attempt_group(Group& group);
  void note_discovery(const std::string& domain, const sts::Discovery& discovery);
  asio::awaitable<void> record(const Group& group,
                               const std::vector<smtp::DeliveryStatus>& statuses,
                               const std::string& content);

  asio::any_io_executor executor_;
  DeliverySettings settings_;
  queue::Store& reader_;
  queue::GroupCommitWriter& writer_;
  queue::QueueIdGenerator& ids_;
  dns::Resolver& resolver_;
  sts::PolicyEngine* policies_;
  Clock clock_;
  asio::steady_timer wakeup_;
  asio::steady_timer pace_;  // the least time between two passes
  asio::steady_timer idle_;
  smtp::ConnectionCache connections_;
  sts::TlsSessionCounts tls_sessions_;
  std::set<std::pair<std::string, std::string>> in_flight_;  // (message id, domain)
  std::map<std::string, std::size_t> per_domain_;
  std::map<std::string, std::deque<Group>> waiting_;  // due, no slot yet; by domain
  bool stopping_ = false;
  bool scheduling_ = false;  // the scheduler coroutine has not ended yet
  std::mt19937_64 random_;
};

}  // namespace stsrelay::relay
