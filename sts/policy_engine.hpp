#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>

#include "dns/resolver.hpp"
#include "sts/policy_cache.hpp"
#include "sts/policy_fetcher.hpp"

namespace stsrelay::sts {

// A step of discovery that went wrong. The policy engine may still have
// answered with a cached policy: a failure never discards one that has not
// expired (RFC 8461 §5.1), since that is exactly what an attacker who can
// block the fetch would want.
struct DiscoveryProblem {
  // RFC 8460 result type ("sts-policy-fetch-error", "sts-policy-invalid",
  // "sts-webpki-invalid"), or empty for a problem RFC 8460 does not report
  // (a TXT lookup that failed, a malformed TXT record).
  std::string result_type;
  std::string detail;
};

struct Discovery {
  enum class Source { none, cache, fetched };
  // The policy to apply; none means the domain has no MTA-STS policy
  // (opportunistic TLS).
  std::optional<CachedPolicy> policy;
  Source source = Source::none;
  std::optional<DiscoveryProblem> problem;
};
std::string_view to_string(Discovery::Source source);

// MTA-STS policy discovery (RFC 8461 §3, §5) over a resolver, a fetcher and
// the persistent cache. Runs on one event loop; lookups of one domain that
// overlap share a single discovery.
class PolicyEngine {
 public:
  using Clock = std::function<TimePoint()>;

  struct Options {
    // A failed fetch for a TXT id is not retried sooner than this.
    std::chrono::seconds fetch_retry_after{std::chrono::minutes(5)};
    // Cache write failures (the policy still applies in memory).
    std::function<void(std::string_view)> on_cache_error;
  };

  PolicyEngine(
      dns::Resolver& resolver, PolicyFetcher& fetcher, PolicyCache& cache, Options options,
      Clock clock = [] { return std::chrono::system_clock::now(); });

  // The policy for a recipient domain, as delivery consults it before each attempt.
  asio::awaitable<Discovery> lookup(std::string domain);

  // Discovery again from the start, fetching the policy even when the TXT id
  // is unchanged or a fetch failed recently: before mail is bounced for an
  // enforce failure (RFC 8461 §5.1) the relay makes sure the policy is current.
  asio::awaitable<Discovery> rediscover(std::string domain);

  // Refreshes cached policies used since their last fetch once three
  // quarters of their lifetime has passed, so policies in use never expire.
  // Call it periodically.
  asio::awaitable<void> refresh();

 private:
  struct InFlight;
  // How eagerly discover() fetches a policy whose TXT id is unchanged.
  enum class Refetch {
    on_new_id,              // lookup: only when the id changed
    always_after_back_off,  // refresh: also for the same id, but not right after a failure
    always,                 // rediscovery: now, whatever happened before
  };
  asio::awaitable<Discovery> discover(std::string domain, Refetch refetch);
  Discovery from_cache(std::optional<CachedPolicy> cached, std::optional<DiscoveryProblem> problem);

  dns::Resolver& resolver_;
  PolicyFetcher& fetcher_;
  PolicyCache& cache_;
  Options options_;
  Clock clock_;
  std::map<std::string, std::shared_ptr<InFlight>, std::less<>> in_flight_;
  // The TXT id whose fetch last failed, and when, per domain.
  std::map<std::string, std::pair<std::string, TimePoint>, std::less<>> failed_fetches_;
  std::map<std::string, TimePoint, std::less<>> last_used_;
};

// Lower case, without a trailing dot: the form domains are cached under.
std::string normalize_domain(std::string_view domain);

}  // namespace stsrelay::sts
