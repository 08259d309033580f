// Policy discovery and caching (RFC 8461 §3, §5) with a fake resolver, a fake
// fetcher and a fake clock: no sockets, no sleeping.

#include "sts/policy_engine.hpp"

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "sts/policy_cache.hpp"
#include "tests/support/temp_dir.hpp"

namespace stsrelay::sts {
namespace {

using namespace std::chrono_literals;

const std::string enforce_policy =
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n";
const std::string testing_policy =
    "version: STSv1\r\nmode: testing\r\nmx: *.example.test\r\nmax_age: 86400\r\n";

class FakeResolver : public dns::Resolver {
 public:
  std::map<std::string, dns::TxtAnswer> txt_answers;
  int txt_lookups = 0;

  void set_txt(const std::string& name, std::vector<std::string> records) {
    txt_answers[name] = dns::TxtAnswer{dns::Status::ok, std::move(records), ""};
  }
  void set_txt_status(const std::string& name, dns::Status status) {
    txt_answers[name] = dns::TxtAnswer{status, {}, "fake"};
  }

  asio::awaitable<dns::MxAnswer> mx(std::string) override { co_return dns::MxAnswer{}; }
  asio::awaitable<dns::AddressAnswer> addresses(std::string) override {
    co_return dns::AddressAnswer{};
  }
  asio::awaitable<dns::TxtAnswer> txt(std::string name) override {
    ++txt_lookups;
    auto found = txt_answers.find(name);
    if (found == txt_answers.end()) {
      co_return dns::TxtAnswer{dns::Status::no_such_name, {}, "fake NXDOMAIN"};
    }
    co_return found->second;
  }
  void cancel() override {}
};

class FakeFetcher : public PolicyFetcher {
 public:
  std::map<std::string, tl::expected<std::string, FetchError>> bodies;
  int fetches = 0;
  // When set, fetches wait until release() so that lookups can overlap.
  std::optional<asio::steady_timer> gate;

  void release() {
    if (gate) {
      gate->cancel();
    }
  }

  asio::awaitable<tl::expected<std::string, FetchError>> fetch(std::string domain) override {
    ++fetches;
    if (gate) {
      co_await gate->async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    }
    auto found = bodies.find(domain);
    if (found == bodies.end()) {
      co_return tl::unexpected(FetchError{FetchErrorKind::fetch_error, "dns", "no such host"});
    }
    co_return found->second;
  }
};

class PolicyEngineTest : public ::testing::Test {
 protected:
  PolicyEngineTest()
      : cache_(temp_.path() / "sts-cache"),
        engine_(resolver_, fetcher_, cache_, {}, [this] { return now_; }) {}

  Discovery run(asio::awaitable<Discovery> operation) {
    std::optional<Discovery> result;
    asio::co_spawn(io_, std::move(operation), [&](std::exception_ptr failure, Discovery found) {
      if (failure) {
        std::rethrow_exception(failure);
      }
      result = std::move(found);
    });
    io_.run();
    io_.restart();
    EXPECT_TRUE(result.has_value());
    return result.value_or(Discovery{});
  }
  Discovery lookup(const std::string& domain) { return run(engine_.lookup(domain)); }

  void publish(const std::string& id, const std::string& body) {
    resolver_.set_txt("_mta-sts.example.test", {"v=STSv1; id=" + id});
    fetcher_.bodies.insert_or_assign("example.test", body);
  }

  testing::TempDir temp_;
  asio::io_context io_;
  FakeResolver resolver_;
  FakeFetcher fetcher_;
  PolicyCache cache_;
  TimePoint now_ = TimePoint(std::chrono::hours(24 * 20000));
  PolicyEngine engine_;
};

TEST_F(PolicyEngineTest, NoTxtRecordMeansNoPolicy) {
  Discovery discovery = lookup("example.test");
  EXPECT_FALSE(discovery.policy);
  EXPECT_EQ(discovery.source, Discovery::Source::none);
  EXPECT_FALSE(discovery.problem);
  EXPECT_EQ(fetcher_.fetches, 0);
}

TEST_F(PolicyEngineTest, UnrelatedTxtRecordsAreNotAPolicy) {
  resolver_.set_txt("_mta-sts.example.test", {"v=spf1 -all"});
  Discovery discovery = lookup("example.test");
  EXPECT_FALSE(discovery.policy);
  EXPECT_FALSE(discovery.problem);
}

TEST_F(PolicyEngineTest, FetchesCachesAndPersistsAPolicy) {
  publish("20261204", enforce_policy);
  Discovery discovery = lookup("Example.TEST.");
  ASSERT_TRUE(discovery.policy);
  EXPECT_EQ(discovery.source, Discovery::Source::fetched);
  EXPECT_EQ(discovery.policy->domain, "example.test");
  EXPECT_EQ(discovery.policy->id, "20261204");
  EXPECT_EQ(discovery.policy->policy.mode, Mode::enforce);
  EXPECT_EQ(discovery.policy->fetched, now_);

  auto reloaded = PolicyCache::load(temp_.path() / "sts-cache");
  EXPECT_FALSE(reloaded.warning);
  EXPECT_EQ(reloaded.cache.find("example.test"), discovery.policy);
}

TEST_F(PolicyEngineTest, SameIdIsServedFromTheCacheWithoutFetching) {
  publish("1", enforce_policy);
  lookup("example.test");
  now_ += 1h;
  Discovery discovery = lookup("example.test");
  EXPECT_EQ(discovery.source, Discovery::Source::cache);
  EXPECT_EQ(fetcher_.fetches, 1);
}

TEST_F(PolicyEngineTest, ChangedIdTriggersARefetch) {
  publish("1", enforce_policy);
  lookup("example.test");
  publish("2", testing_policy);
  Discovery discovery = lookup("example.test");
  EXPECT_EQ(discovery.source, Discovery::Source::fetched);
  EXPECT_EQ(discovery.policy->id, "2");
  EXPECT_EQ(discovery.policy->policy.mode, Mode::testing);
  EXPECT_EQ(fetcher_.fetches, 2);
}

TEST_F(PolicyEngineTest, FailedFetchForANewIdKeepsTheCachedPolicy) {
  publish("1", enforce_policy);
  lookup("example.test");
  resolver_.set_txt("_mta-sts.example.test", {"v=STSv1; id=2"});
  fetcher_.bodies.insert_or_assign(
      "example.test",
      tl::unexpected(FetchError{FetchErrorKind::webpki_invalid, "certificate-expired", "expired"}));
  Discovery discovery = lookup("example.test");
  ASSERT_TRUE(discovery.policy);
  EXPECT_EQ(discovery.source, Discovery::Source::cache);
  EXPECT_EQ(discovery.policy->id, "1");
  EXPECT_EQ(discovery.policy->policy.mode, Mode::enforce);
  ASSERT_TRUE(discovery.problem);
  EXPECT_EQ(discovery.problem->result_type, "sts-webpki-invalid");
}

TEST_F(PolicyEngineTest, MissingTxtRecordKeepsTheCachedPolicy) {
  publish("1", enforce_policy);
  lookup("example.test");
  resolver_.txt_answers.clear();
  Discovery discovery = lookup("example.test");
  ASSERT_TRUE(discovery.policy);
  EXPECT_EQ(discovery.policy->policy.mode, Mode::enforce);
}

TEST_F(PolicyEngineTest, TxtLookupFailureKeepsTheCachedPolicyAndSaysSo) {
  publish("1", enforce_policy);
  lookup("example.test");
  resolver_.set_txt_status("_mta-sts.example.test", dns::Status::server_failure);
  Discovery discovery = lookup("example.test");
  ASSERT_TRUE(discovery.policy);
  ASSERT_TRUE(discovery.problem);
  EXPECT_NE(discovery.problem->detail.find("server_failure"), std::string::npos)
      << discovery.problem->detail;
}

TEST_F(PolicyEngineTest, TxtLookupFailureWithoutCacheMeansNoPolicy) {
  resolver_.set_txt_status("_mta-sts.example.test", dns::Status::timeout);
  Discovery discovery = lookup("example.test");
  EXPECT_FALSE(discovery.policy);
  EXPECT_TRUE(discovery.problem);
}

TEST_F(PolicyEngineTest, FailedFetchIsNotRetriedForFiveMinutes) {
  resolver_.set_txt("_mta-sts.example.test", {"v=STSv1; id=1"});
  Discovery first = lookup("example.test");
  EXPECT_FALSE(first.policy);
  ASSERT_TRUE(first.problem);
  EXPECT_EQ(first.problem->result_type, "sts-policy-fetch-error");
  EXPECT_EQ(fetcher_.fetches, 1);

  now_ += 4min;
  fetcher_.bodies.insert_or_assign("example.test", enforce_policy);
  EXPECT_FALSE(lookup("example.test").policy);
  EXPECT_EQ(fetcher_.fetches, 1);

  now_ += 1min;
  EXPECT_TRUE(lookup("example.test").policy);
  EXPECT_EQ(fetcher_.fetches, 2);
}

TEST_F(PolicyEngineTest, ANewIdIsFetchedDespiteARecentFailureOfTheOldOne) {
  resolver_.set_txt("_mta-sts.example.test", {"v=STSv1; id=1"});
  lookup("example.test");
  publish("2", enforce_policy);
  EXPECT_TRUE(lookup("example.test").policy);
  EXPECT_EQ(fetcher_.fetches, 2);
}

TEST_F(PolicyEngineTest, InvalidPolicyIsReportedAndTheCachedOneKept) {
  publish("1", enforce_policy);
  lookup("example.test");
  publish("2", "version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n");  // no mx
  Discovery discovery = lookup("example.test");
  ASSERT_TRUE(discovery.policy);
  EXPECT_EQ(discovery.policy->id, "1");
  ASSERT_TRUE(discovery.problem);
  EXPECT_EQ(discovery.problem->result_type, "sts-policy-invalid");
}

TEST_F(PolicyEngineTest, ExpiredPoliciesAreDropped) {
  publish("1", enforce_policy);
  lookup("example.test");
  resolver_.txt_answers.clear();
  now_ += 86400s;
  Discovery discovery = lookup("example.test");
  EXPECT_FALSE(discovery.policy);
  EXPECT_FALSE(cache_.find("example.test"));
}

TEST_F(PolicyEngineTest, ModeNoneIsCachedToo) {
  publish("1", "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n");
  lookup("example.test");
  Discovery discovery = lookup("example.test");
  ASSERT_TRUE(discovery.policy);
  EXPECT_EQ(discovery.source, Discovery::Source::cache);
  EXPECT_EQ(discovery.policy->policy.mode, Mode::none);
}

TEST_F(PolicyEngineTest, RediscoveryFetchesEvenWithAnUnchangedId) {
  publish("1", enforce_policy);
  lookup("example.test");
  fetcher_.bodies.insert_or_assign("example.test",
                                   "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n");
  Discovery discovery = run(engine_.rediscover("example.test"));
  EXPECT_EQ(discovery.source, Discovery::Source::fetched);
  EXPECT_EQ(discovery.policy->policy.mode, Mode::none);
  EXPECT_EQ(fetcher_.fetches, 2);
}

TEST_F(PolicyEngineTest, OverlappingLookupsShareOneDiscovery) {
  publish("1", enforce_policy);
  fetcher_.gate.emplace(io_, asio::steady_timer::time_point::max());
  std::vector<Discovery> results;
  for (int i = 0; i < 5; ++i) {
    asio::co_spawn(io_, engine_.lookup("example.test"),
                   [&](std::exception_ptr, Discovery found) { results.push_back(found); });
  }
  io_.poll();  // everyone is waiting now: one on the fetch, four on it
  EXPECT_TRUE(results.empty());
  fetcher_.release();
  io_.run();
  ASSERT_EQ(results.size(), 5u);
  for (const auto& result : results) {
    ASSERT_TRUE(result.policy);
    EXPECT_EQ(result.policy->id, "1");
  }
  EXPECT_EQ(fetcher_.fetches, 1);
  EXPECT_EQ(resolver_.txt_lookups, 1);
}

TEST_F(PolicyEngineTest, RefreshRefetchesPoliciesInUseBeforeTheyExpire) {
  publish("1", enforce_policy);
  lookup("example.test");
  resolver_.set_txt("_mta-sts.other.test", {"v=STSv1; id=1"});
  fetcher_.bodies.insert_or_assign("other.test", testing_policy);
  lookup("other.test");
  EXPECT_EQ(fetcher_.fetches, 2);

  now_ += 12h;
  lookup("example.test");  // only example.test is used after its fetch
  now_ += 7h;              // 19h of 24h: past three quarters
  auto refresh = [this]() -> asio::awaitable<Discovery> {
    co_await engine_.refresh();
    co_return Discovery{};
  };
  run(refresh());
  EXPECT_EQ(fetcher_.fetches, 3);
  EXPECT_EQ(cache_.find("example.test")->fetched, now_);
  EXPECT_NE(cache_.find("other.test")->fetched, now_);
}

TEST(PolicyCacheTest, CorruptFileIsSetAsideNotFatal) {
  testing::TempDir temp;
  const auto file = temp.path() / "sts-cache";
  std::ofstream(file) << "{ this is not json";
  auto loaded = PolicyCache::load(file);
  ASSERT_TRUE(loaded.warning);
  EXPECT_NE(loaded.warning->find("moved it to"), std::string::npos) << *loaded.warning;
  EXPECT_TRUE(loaded.cache.all().empty());
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST(PolicyCacheTest, MissingFileIsAnEmptyCache) {
  testing::TempDir temp;
  auto loaded = PolicyCache::load(temp.path() / "absent" / "sts-cache");
  EXPECT_FALSE(loaded.warning);
  EXPECT_TRUE(loaded.cache.all().empty());
}

TEST(PolicyCacheTest, SurvivesARoundTripThroughItsFile) {
  testing::TempDir temp;
  const auto file = temp.path() / "dir" / "sts-cache";
  PolicyCache cache(file);
  CachedPolicy first{
      "a.test", "1", {Mode::enforce, 86400s, {"mx.a.test", "*.b.a.test"}}, TimePoint(1700000000s)};
  CachedPolicy second{"b.test", "x2", {Mode::none, 0s, {}}, TimePoint(1700000100s)};
  ASSERT_TRUE(cache.store(first));
  ASSERT_TRUE(cache.store(second));
  ASSERT_TRUE(cache.erase("nothing.test"));
  auto loaded = PolicyCache::load(file);
  EXPECT_FALSE(loaded.warning);
  EXPECT_EQ(loaded.cache.all(), (std::vector<CachedPolicy>{first, second}));
  ASSERT_TRUE(loaded.cache.erase("a.test"));
  EXPECT_EQ(PolicyCache::load(file).cache.all(), (std::vector<CachedPolicy>{second}));
}

}  // namespace
}  // namespace stsrelay::sts
