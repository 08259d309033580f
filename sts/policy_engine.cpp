#include "sts/policy_engine.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "sts/txt_record.hpp"

namespace stsrelay::sts {

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

}  // namespace

std::string_view to_string(Discovery::Source source) {
  switch (source) {
    case Discovery::Source::none:
      return "none";
    case Discovery::Source::cache:
      return "cache";
    case Discovery::Source::fetched:
      return "fetched";
  }
  return "none";
}

std::string normalize_domain(std::string_view domain) {
  if (!domain.empty() && domain.back() == '.') {
    domain.remove_suffix(1);
  }
  std::string normalized(domain);
  std::transform(normalized.begin(), normalized.end(), normalized.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return normalized;
}

// Callers of lookup() for a domain whose discovery is already running wait
// on the timer (cancelled when the result is in) instead of starting another.
struct PolicyEngine::InFlight {
  explicit InFlight(asio::any_io_executor executor) : done(executor) {
    done.expires_at(asio::steady_timer::time_point::max());
  }
  asio::steady_timer done;
  std::optional<Discovery> result;
};

PolicyEngine::PolicyEngine(dns::Resolver& resolver, PolicyFetcher& fetcher, PolicyCache& cache,
                           Options options, Clock clock)
    : resolver_(resolver),
      fetcher_(fetcher),
      cache_(cache),
      options_(std::move(options)),
      clock_(std::move(clock)) {}

asio::awaitable<Discovery> PolicyEngine::lookup(std::string domain) {
  domain = normalize_domain(domain);
  last_used_.insert_or_assign(domain, clock_());
  if (auto running = in_flight_.find(domain); running != in_flight_.end()) {
    auto flight = running->second;
    while (!flight->result) {
      co_await flight->done.async_wait(use_tuple);
    }
    co_return *flight->result;
  }
  auto flight = std::make_shared<InFlight>(co_await asio::this_coro::executor);
  in_flight_.emplace(domain, flight);
  Discovery discovery;
  try {
    discovery = co_await discover(domain, Refetch::on_new_id);
  } catch (...) {
    // Waiters must not hang on a bug: they get "no policy" with the reason.
    discovery.problem = DiscoveryProblem{"", "internal error during discovery"};
    flight->result = discovery;
    flight->done.cancel();
    in_flight_.erase(domain);
    throw;
  }
  flight->result = discovery;
  flight->done.cancel();
  in_flight_.erase(domain);
  co_return discovery;
}

asio::awaitable<Discovery> PolicyEngine::rediscover(std::string domain) {
  domain = normalize_domain(domain);
  last_used_.insert_or_assign(domain, clock_());
  co_return co_await discover(domain, Refetch::always);
}

asio::awaitable<void> PolicyEngine::refresh() {
  const TimePoint now = clock_();
  std::vector<std::string> due;
  for (const auto& cached : cache_.all()) {
    auto used = last_used_.find(cached.domain);
    const bool in_use = used != last_used_.end() && used->second > cached.fetched;
    if (in_use && now >= cached.fetched + cached.policy.max_age * 3 / 4) {
      due.push_back(cached.domain);
    }
  }
  for (auto& domain : due) {
    co_await discover(domain, Refetch::always_after_back_off);
  }
}

Discovery PolicyEngine::from_cache(std::optional<CachedPolicy> cached,
                                   std::optional<DiscoveryProblem> problem) {
  Discovery discovery;
  discovery.source = cached ? Discovery::Source::cache : Discovery::Source::none;
  discovery.policy = std::move(cached);
  discovery.problem = std::move(problem);
  return discovery;
}

asio::awaitable<Discovery> PolicyEngine::discover(std::string domain, Refetch refetch) {
  std::optional<CachedPolicy> cached = cache_.find(domain);
  if (cached && cached->expired(clock_())) {
    if (auto erased = cache_.erase(domain); !erased && options_.on_cache_error) {
      options_.on_cache_error(erased.error());
    }
    cached.reset();
  }

  // §3.1: the TXT record says whether there is a policy and which one.
  const std::string txt_name = "_mta-sts." + domain;
  dns::TxtAnswer txt = co_await resolver_.txt(txt_name);
  if (txt.status == dns::Status::no_data || txt.status == dns::Status::no_such_name) {
    co_return from_cache(std::move(cached), std::nullopt);
  }
  if (txt.status != dns::Status::ok) {
    co_return from_cache(std::move(cached),
                         DiscoveryProblem{"", "TXT lookup for " + txt_name + " failed: " +
                                                  std::string(dns::to_string(txt.status))});
  }
  auto record = parse_sts_txt(txt.records);
  if (!record) {
    if (record.error().error == TxtError::no_sts_record) {
      co_return from_cache(std::move(cached), std::nullopt);
    }
    co_return from_cache(std::move(cached), DiscoveryProblem{"", "TXT record at " + txt_name +
                                                                     ": " + record.error().detail});
  }

  // §3.3 / §5: fetch only when the id changed (or nothing is cached).
  if (cached && cached->id == record->id && refetch == Refetch::on_new_id) {
    co_return from_cache(std::move(cached), std::nullopt);
  }
  if (refetch != Refetch::always) {
    auto failed = failed_fetches_.find(domain);
    if (failed != failed_fetches_.end() && failed->second.first == record->id &&
        clock_() < failed->second.second + options_.fetch_retry_after) {
      co_return from_cache(
          std::move(cached),
          DiscoveryProblem{"sts-policy-fetch-error",
                           "policy fetch for id " + record->id +
                               " failed recently; not retried before the back-off ends"});
    }
  }

  auto fetched = co_await fetcher_.fetch(domain);
  if (!fetched) {
    failed_fetches_.insert_or_assign(domain, std::pair{record->id, clock_()});
    co_return from_cache(std::move(cached),
                         DiscoveryProblem{std::string(rfc8460_result_type(fetched.error().kind)),
                                          fetched.error().detail});
  }
  auto policy = parse_policy(*fetched);
  if (!policy) {
    failed_fetches_.insert_or_assign(domain, std::pair{record->id, clock_()});
    co_return from_cache(
        std::move(cached),
        DiscoveryProblem{"sts-policy-invalid", policy.error().rule + ": " + policy.error().detail});
  }
  failed_fetches_.erase(domain);

  CachedPolicy fresh{domain, record->id, std::move(*policy), clock_()};
  if (auto stored = cache_.store(fresh); !stored && options_.on_cache_error) {
    options_.on_cache_error(stored.error());
  }
  Discovery discovery;
  discovery.policy = std::move(fresh);
  discovery.source = Discovery::Source::fetched;
  co_return discovery;
}

}  // namespace stsrelay::sts
