#include "dns/resolver.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/fake_dns_server.hpp"

namespace stsrelay::dns {
namespace {

using namespace std::chrono_literals;
using stsrelay::testing::DnsRcode;
using stsrelay::testing::DnsType;
using stsrelay::testing::FakeDnsServer;
using ::testing::ElementsAre;

void rethrow(std::exception_ptr failure) {
  if (failure) {
    std::rethrow_exception(failure);
  }
}

template <typename T>
asio::awaitable<void> store(asio::awaitable<T> lookup, std::optional<T>* result) {
  *result = co_await std::move(lookup);
}

asio::ip::address ip(const char* text) {
  return asio::ip::make_address(text);
}

std::vector<std::string> names(const MxAnswer& answer) {
  std::vector<std::string> hosts;
  for (const auto& host : answer.hosts) {
    hosts.push_back(host.name);
  }
  return hosts;
}

class ResolverTest : public ::testing::Test {
 protected:
  std::unique_ptr<Resolver> make(std::vector<asio::ip::udp::endpoint> servers,
                                 std::chrono::milliseconds timeout = 300ms) {
    ResolverOptions options;
    options.servers = std::move(servers);
    options.timeout = timeout;
    auto made = make_ares_resolver(io.get_executor(), options);
    if (!made) {
      ADD_FAILURE() << made.error();
      return nullptr;
    }
    return std::move(*made);
  }

  // Starts a lookup; its result appears once the loop has run.
  template <typename T>
  std::shared_ptr<std::optional<T>> start(asio::awaitable<T> lookup) {
    auto result = std::make_shared<std::optional<T>>();
    asio::co_spawn(io, store(std::move(lookup), result.get()), rethrow);
    return result;
  }

  template <typename T>
  T run(asio::awaitable<T> lookup) {
    auto result = start(std::move(lookup));
    io.restart();
    io.run();
    if (!result->has_value()) {
      ADD_FAILURE() << "the lookup never completed";
      return T{};
    }
    return std::move(**result);
  }

  FakeDnsServer server;
  asio::io_context io;
  std::unique_ptr<Resolver> resolver = make({server.endpoint()});
};

TEST_F(ResolverTest, MxHostsAreSortedByPreferenceWithCaseKept) {
  server.add_mx("example.test", 20, "mx2.example.test");
  server.add_mx("example.test", 10, "MX1.Example.TEST");
  server.add_mx("example.test", 30, "backup.other.test.");
  MxAnswer answer = run(resolver->mx("example.test"));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_FALSE(answer.null_mx);
  EXPECT_THAT(answer.hosts,
              ElementsAre(MxHost{"MX1.Example.TEST", 10}, MxHost{"mx2.example.test", 20},
                          MxHost{"backup.other.test", 30}));
}

TEST_F(ResolverTest, EqualPreferencesComeInBothOrders) {
  server.add_mx("example.test", 10, "a.example.test");
  server.add_mx("example.test", 10, "b.example.test");
  server.add_mx("example.test", 20, "c.example.test");
  int a_first = 0;
  int b_first = 0;
  // Each order has probability 1/2: missing one in 64 draws is a 2^-63 event.
  for (int lookup = 0; lookup < 64; ++lookup) {
    MxAnswer answer = run(resolver->mx("example.test"));
    ASSERT_EQ(answer.status, Status::ok) << answer.detail;
    ASSERT_EQ(answer.hosts.size(), 3u);
    EXPECT_EQ(answer.hosts[2], (MxHost{"c.example.test", 20}));
    if (answer.hosts[0].name == "a.example.test") {
      ++a_first;
    } else {
      ++b_first;
    }
  }
  EXPECT_GT(a_first, 0);
  EXPECT_GT(b_first, 0);
}

TEST_F(ResolverTest, NullMxMeansNoMail) {
  server.add_mx("nomail.test", 0, ".");
  MxAnswer answer = run(resolver->mx("nomail.test"));
  EXPECT_EQ(answer.status, Status::ok);
  EXPECT_TRUE(answer.null_mx);
  EXPECT_TRUE(answer.hosts.empty());
}

TEST_F(ResolverTest, RootHostsBesideRealOnesAreDropped) {
  server.add_mx("mixed.test", 10, ".");
  server.add_mx("mixed.test", 20, "mx.mixed.test");
  MxAnswer answer = run(resolver->mx("mixed.test"));
  EXPECT_EQ(answer.status, Status::ok);
  EXPECT_FALSE(answer.null_mx);
  EXPECT_THAT(names(answer), ElementsAre("mx.mixed.test"));
}

struct OutcomeCase {
  const char* what;
  void (*zone)(FakeDnsServer&);
  Status expected;
};

class MxOutcomeTest : public ResolverTest, public ::testing::WithParamInterface<OutcomeCase> {};

TEST_P(MxOutcomeTest, KeepsTheDnsMeaning) {
  GetParam().zone(server);
  MxAnswer answer = run(resolver->mx("domain.test"));
  EXPECT_EQ(answer.status, GetParam().expected) << answer.detail;
  EXPECT_TRUE(answer.hosts.empty());
  EXPECT_FALSE(answer.null_mx);
  EXPECT_FALSE(answer.detail.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Outcomes, MxOutcomeTest,
    ::testing::Values(
        OutcomeCase{"nxdomain", [](FakeDnsServer&) {}, Status::no_such_name},
        OutcomeCase{"nodata", [](FakeDnsServer& s) { s.add_a("domain.test", "192.0.2.1"); },
                    Status::no_data},
        OutcomeCase{"servfail",
                    [](FakeDnsServer& s) { s.set_rcode("domain.test", DnsRcode::servfail); },
                    Status::server_failure},
        OutcomeCase{"refused",
                    [](FakeDnsServer& s) { s.set_rcode("domain.test", DnsRcode::refused); },
                    Status::server_failure},
        OutcomeCase{"formerr",
                    [](FakeDnsServer& s) { s.set_rcode("domain.test", DnsRcode::formerr); },
                    Status::server_failure},
        OutcomeCase{"timeout", [](FakeDnsServer& s) { s.set_unresponsive("domain.test"); },
                    Status::timeout},
        OutcomeCase{"cname_without_mx",
                    [](FakeDnsServer& s) {
                      s.add_cname("domain.test", "target.test");
                      s.add_a("target.test", "192.0.2.1");
                    },
                    Status::no_data},
        OutcomeCase{"cname_to_nowhere",
                    [](FakeDnsServer& s) { s.add_cname("domain.test", "missing.test"); },
                    Status::no_such_name}),
    [](const auto& info) { return std::string(info.param.what); });

struct AddressCase {
  const char* what;
  void (*zone)(FakeDnsServer&);
  Status expected;
  std::vector<asio::ip::address> addresses;
};

class AddressTest : public ResolverTest, public ::testing::WithParamInterface<AddressCase> {};

TEST_P(AddressTest, CombinesAAndAaaa) {
  GetParam().zone(server);
  AddressAnswer answer = run(resolver->addresses("host.test"));
  EXPECT_EQ(answer.status, GetParam().expected) << answer.detail;
  EXPECT_EQ(answer.addresses, GetParam().addresses);
}

INSTANTIATE_TEST_SUITE_P(
    Combinations, AddressTest,
    ::testing::Values(AddressCase{"both_ipv6_first",
                                  [](FakeDnsServer& s) {
                                    s.add_a("host.test", "192.0.2.1");
                                    s.add_a("host.test", "192.0.2.2");
                                    s.add_aaaa("host.test", "2001:db8::1");
                                  },
                                  Status::ok,
                                  {ip("2001:db8::1"), ip("192.0.2.1"), ip("192.0.2.2")}},
                      AddressCase{"only_a",
                                  [](FakeDnsServer& s) { s.add_a("host.test", "192.0.2.1"); },
                                  Status::ok,
                                  {ip("192.0.2.1")}},
                      AddressCase{"only_aaaa",
                                  [](FakeDnsServer& s) { s.add_aaaa("host.test", "2001:db8::2"); },
                                  Status::ok,
                                  {ip("2001:db8::2")}},
                      AddressCase{
                          "neither_exists", [](FakeDnsServer&) {}, Status::no_such_name, {}},
                      AddressCase{"both_nodata",
                                  [](FakeDnsServer& s) { s.add_mx("host.test", 10, "mx.test"); },
                                  Status::no_data,
                                  {}},
                      AddressCase{"aaaa_servfail_a_records",
                                  [](FakeDnsServer& s) {
                                    s.set_rcode("host.test", DnsType::aaaa, DnsRcode::servfail);
                                    s.add_a("host.test", "192.0.2.1");
                                  },
                                  Status::ok,
                                  {ip("192.0.2.1")}},
                      AddressCase{"aaaa_servfail_a_nodata",
                                  [](FakeDnsServer& s) {
                                    s.set_rcode("host.test", DnsType::aaaa, DnsRcode::servfail);
                                    s.add_mx("host.test", 10, "mx.test");
                                  },
                                  Status::server_failure,
                                  {}},
                      AddressCase{"a_refused_aaaa_nodata",
                                  [](FakeDnsServer& s) {
                                    s.set_rcode("host.test", DnsType::a, DnsRcode::refused);
                                    s.add_mx("host.test", 10, "mx.test");
                                  },
                                  Status::server_failure,
                                  {}},
                      AddressCase{"aaaa_timeout_a_records",
                                  [](FakeDnsServer& s) {
                                    s.set_unresponsive("host.test", DnsType::aaaa);
                                    s.add_a("host.test", "192.0.2.1");
                                  },
                                  Status::ok,
                                  {ip("192.0.2.1")}},
                      AddressCase{"aaaa_timeout_a_nodata",
                                  [](FakeDnsServer& s) {
                                    s.set_unresponsive("host.test", DnsType::aaaa);
                                    s.add_mx("host.test", 10, "mx.test");
                                  },
                                  Status::timeout,
                                  {}},
                      AddressCase{"cname_chain",
                                  [](FakeDnsServer& s) {
                                    s.add_cname("host.test", "alias.test");
                                    s.add_cname("alias.test", "real.test");
                                    s.add_a("real.test", "192.0.2.9");
                                    s.add_aaaa("real.test", "2001:db8::9");
                                  },
                                  Status::ok,
                                  {ip("2001:db8::9"), ip("192.0.2.9")}}),
    [](const auto& info) { return std::string(info.param.what); });

TEST_F(ResolverTest, BothLookupsAreInFlightAtOnce) {
  // An unanswered AAAA must not hold back the A query: both reach the server.
  server.set_unresponsive("host.test");
  AddressAnswer answer = run(resolver->addresses("host.test"));
  EXPECT_EQ(answer.status, Status::timeout);
  EXPECT_GE(server.query_count("host.test"), 2u);
}

TEST_F(ResolverTest, TxtJoinsTheStringsOfOneRecordOnly) {
  server.add_txt("_mta-sts.example.test", {"v=STSv1; ", "id=2024", "0101"});
  server.add_txt("_mta-sts.example.test", {"unrelated"});
  server.add_txt("_mta-sts.example.test", {"a", "b"});
  TxtAnswer answer = run(resolver->txt("_mta-sts.example.test"));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_THAT(answer.records, ElementsAre("v=STSv1; id=20240101", "unrelated", "ab"));
}

TEST_F(ResolverTest, TxtKeepsEmptyAndLongStrings) {
  std::string long_string(255, 'x');
  server.add_txt("txt.test", {long_string, long_string});
  server.add_txt("txt.test", {""});
  TxtAnswer answer = run(resolver->txt("txt.test"));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_THAT(answer.records, ElementsAre(long_string + long_string, ""));
}

TEST_F(ResolverTest, TxtOutcomes) {
  server.add_a("nodata.test", "192.0.2.1");
  server.set_rcode("broken.test", DnsRcode::servfail);
  EXPECT_EQ(run(resolver->txt("nodata.test")).status, Status::no_data);
  EXPECT_EQ(run(resolver->txt("missing.test")).status, Status::no_such_name);
  EXPECT_EQ(run(resolver->txt("broken.test")).status, Status::server_failure);
}

TEST_F(ResolverTest, CnameChainIsFollowedForMxAndTxt) {
  server.add_cname("example.test", "hop1.test");
  server.add_cname("hop1.test", "hop2.test");
  server.add_mx("hop2.test", 5, "mx.hop2.test");
  server.add_txt("hop2.test", {"hello"});
  MxAnswer mx = run(resolver->mx("example.test"));
  ASSERT_EQ(mx.status, Status::ok) << mx.detail;
  EXPECT_THAT(names(mx), ElementsAre("mx.hop2.test"));
  TxtAnswer txt = run(resolver->txt("example.test"));
  ASSERT_EQ(txt.status, Status::ok) << txt.detail;
  EXPECT_THAT(txt.records, ElementsAre("hello"));
}

TEST_F(ResolverTest, TruncatedUdpAnswerIsRetriedOverTcp) {
  server.set_truncate_udp("big.test");
  server.add_txt("big.test", {"complete"});
  TxtAnswer answer = run(resolver->txt("big.test"));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_THAT(answer.records, ElementsAre("complete"));
  EXPECT_GE(server.tcp_query_count("big.test"), 1u);
}

TEST_F(ResolverTest, AnswerLargerThanUdpAllowsArrivesOverTcp) {
  // 200 A records (~3 KiB) exceed the advertised EDNS size; the TCP answer
  // then arrives in pieces c-ares reads one call at a time.
  std::vector<asio::ip::address> expected;
  for (int i = 0; i < 200; ++i) {
    std::string address = "10.0." + std::to_string(i / 100) + "." + std::to_string(i % 100 + 1);
    server.add_a("many.test", address);
    expected.push_back(ip(address.c_str()));
  }
  AddressAnswer answer = run(resolver->addresses("many.test"));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_EQ(answer.addresses, expected);
  EXPECT_GE(server.tcp_query_count("many.test"), 1u);
}

TEST_F(ResolverTest, TrailingDotIsAccepted) {
  server.add_mx("example.test", 10, "mx.example.test");
  MxAnswer answer = run(resolver->mx("example.test."));
  ASSERT_EQ(answer.status, Status::ok) << answer.detail;
  EXPECT_THAT(names(answer), ElementsAre("mx.example.test"));
}

TEST_F(ResolverTest, NameThatCannotBeEncodedFailsAtOnce) {
  // c-ares calls back from inside ares_query here: the lookup still completes.
  std::string overlong_label(64, 'a');
  MxAnswer answer = run(resolver->mx(overlong_label + ".test"));
  EXPECT_EQ(answer.status, Status::no_such_name) << answer.detail;
  EXPECT_EQ(server.query_count(overlong_label + ".test"), 0u);
}

TEST_F(ResolverTest, CancelCompletesEveryPendingLookup) {
  resolver = make({server.endpoint()}, 30s);  // a missed cancel would hang, not time out
  server.set_unresponsive("slow.test");
  auto mx = start(resolver->mx("slow.test"));
  auto addresses = start(resolver->addresses("slow.test"));
  auto txt = start(resolver->txt("slow.test"));
  io.poll();  // runs the lookups until they wait for answers
  resolver->cancel();
  io.run();
  ASSERT_TRUE(mx->has_value() && addresses->has_value() && txt->has_value());
  EXPECT_EQ((*mx)->status, Status::cancelled);
  EXPECT_EQ((*addresses)->status, Status::cancelled);
  EXPECT_EQ((*txt)->status, Status::cancelled);

  // The resolver still works afterwards.
  server.add_a("fast.test", "192.0.2.7");
  AddressAnswer answer = run(resolver->addresses("fast.test"));
  EXPECT_EQ(answer.status, Status::ok) << answer.detail;
}

TEST_F(ResolverTest, DestroyingTheResolverCancelsPendingLookups) {
  resolver = make({server.endpoint()}, 30s);
  server.set_unresponsive("slow.test");
  auto mx = start(resolver->mx("slow.test"));
  auto addresses = start(resolver->addresses("slow.test"));
  auto txt = start(resolver->txt("slow.test"));
  io.poll();
  resolver.reset();
  io.run();
  ASSERT_TRUE(mx->has_value() && addresses->has_value() && txt->has_value());
  EXPECT_EQ((*mx)->status, Status::cancelled);
  EXPECT_EQ((*addresses)->status, Status::cancelled);
  EXPECT_EQ((*txt)->status, Status::cancelled);
}

TEST_F(ResolverTest, LookupAwaitedAfterTheResolverIsGoneIsCancelled) {
  auto lookup = resolver->mx("example.test");
  resolver.reset();
  MxAnswer answer = run(std::move(lookup));
  EXPECT_EQ(answer.status, Status::cancelled);
}

TEST(ResolverShutdown, LoopDestroyedWithLookupsPendingIsSafe) {
  FakeDnsServer server;
  server.set_unresponsive("slow.test");
  auto io = std::make_unique<asio::io_context>();
  ResolverOptions options;
  options.servers = {server.endpoint()};
  options.timeout = 30s;
  auto resolver = make_ares_resolver(io->get_executor(), options);
  ASSERT_TRUE(resolver) << resolver.error();
  std::optional<MxAnswer> result;
  asio::co_spawn(*io, store((*resolver)->mx("slow.test"), &result), rethrow);
  io->poll();  // runs the lookup until it waits for the answer
  resolver->reset();
  io.reset();  // destroys the suspended coroutine, which held the channel
  EXPECT_FALSE(result.has_value());
}

TEST_F(ResolverTest, ManyConcurrentLookups) {
  constexpr int hosts = 100;
  for (int i = 0; i < hosts; ++i) {
    std::string name = "host" + std::to_string(i) + ".test";
    server.add_a(name, "192.0.2." + std::to_string(i + 1));
    server.add_mx(name, 10, "mx." + name);
  }
  std::vector<std::shared_ptr<std::optional<AddressAnswer>>> addresses;
  std::vector<std::shared_ptr<std::optional<MxAnswer>>> exchangers;
  for (int i = 0; i < hosts; ++i) {
    std::string name = "host" + std::to_string(i) + ".test";
    addresses.push_back(start(resolver->addresses(name)));
    exchangers.push_back(start(resolver->mx(name)));
  }
  io.run();
  for (int i = 0; i < hosts; ++i) {
    std::string name = "host" + std::to_string(i) + ".test";
    ASSERT_TRUE(addresses[i]->has_value());
    EXPECT_EQ((*addresses[i])->status, Status::ok) << (*addresses[i])->detail;
    EXPECT_THAT((*addresses[i])->addresses,
                ElementsAre(ip(("192.0.2." + std::to_string(i + 1)).c_str())));
    ASSERT_TRUE(exchangers[i]->has_value());
    EXPECT_THAT(names(**exchangers[i]), ElementsAre("mx." + name));
  }
}

TEST_F(ResolverTest, DeadServerIsSkipped) {
  asio::ip::udp::endpoint dead;
  {
    // A port that was free a moment ago: answers with ICMP port unreachable.
    asio::ip::udp::socket probe(io, asio::ip::udp::endpoint(ip("127.0.0.1"), 0));
    dead = probe.local_endpoint();
  }
  resolver = make({dead, server.endpoint()}, 2s);
  server.add_a("host.test", "192.0.2.1");
  AddressAnswer answer = run(resolver->addresses("host.test"));
  EXPECT_EQ(answer.status, Status::ok) << answer.detail;
}

TEST(ResolverIpv6, ServerOnIpv6Loopback) {
  std::unique_ptr<FakeDnsServer> server;
  try {
    server = std::make_unique<FakeDnsServer>(asio::ip::make_address("::1"));
  } catch (const std::system_error& error) {
    GTEST_SKIP() << "no IPv6 loopback here: " << error.what();
  }
  server->add_mx("example.test", 10, "mx.example.test");
  asio::io_context io;
  ResolverOptions options;
  options.servers = {server->endpoint()};
  options.timeout = 2s;
  auto resolver = make_ares_resolver(io.get_executor(), options);
  ASSERT_TRUE(resolver) << resolver.error();
  std::optional<MxAnswer> result;
  asio::co_spawn(io, store((*resolver)->mx("example.test"), &result), rethrow);
  io.run();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status, Status::ok) << result->detail;
  EXPECT_THAT(names(*result), ElementsAre("mx.example.test"));
}

TEST(ResolverOptionsTest, RejectsUnusableServers) {
  asio::io_context io;
  const std::vector<asio::ip::udp::endpoint> unusable = {
      {ip("192.0.2.53"), 0},
      {ip("0.0.0.0"), 53},
      {ip("::"), 53},
      {ip("224.0.0.1"), 53},
  };
  for (const auto& server : unusable) {
    ResolverOptions options;
    options.servers = {server};
    auto made = make_ares_resolver(io.get_executor(), options);
    ASSERT_FALSE(made) << server;
    EXPECT_THAT(made.error(), ::testing::HasSubstr("DNS server")) << made.error();
  }
  ResolverOptions no_time;
  no_time.timeout = 0ms;
  EXPECT_FALSE(make_ares_resolver(io.get_executor(), no_time));
}

TEST(ResolverOptionsTest, NoServersMeansTheSystemConfiguration) {
  asio::io_context io;
  auto made = make_ares_resolver(io.get_executor(), ResolverOptions{});
  EXPECT_TRUE(made) << made.error();
}

TEST(StatusTest, Names) {
  EXPECT_EQ(to_string(Status::ok), "ok");
  EXPECT_EQ(to_string(Status::no_such_name), "no_such_name");
  EXPECT_EQ(to_string(Status::server_failure), "server_failure");
  EXPECT_EQ(to_string(Status::cancelled), "cancelled");
}

}  // namespace
}  // namespace stsrelay::dns
