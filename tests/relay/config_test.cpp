#include "relay/config.hpp"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.hpp"

namespace stsrelay::relay {
namespace {

using namespace std::chrono_literals;

Endpoint endpoint(const char* text) {
  return Endpoint::parse(text).value();
}
Network network(const char* text) {
  return Network::parse(text).value();
}

TEST(ConfigDefaults, EveryKeyHasTheSpecDefault) {
  const auto parsed = parse_config("");
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  const Config& c = *parsed;
  EXPECT_EQ(c.hostname, default_hostname());
  EXPECT_FALSE(c.hostname.empty());
  EXPECT_EQ(c.listen.addresses, std::vector<Endpoint>{endpoint("127.0.0.1:2525")});
  EXPECT_EQ(c.listen.allowed_networks,
            (std::vector<Network>{network("127.0.0.0/8"), network("::1/128")}));
  EXPECT_EQ(c.listen.max_message_size, 52428800u);
  EXPECT_EQ(c.listen.max_recipients, 1000u);
  EXPECT_EQ(c.listen.max_connections, 1000u);
  EXPECT_EQ(c.listen.tls_cert, "");
  EXPECT_EQ(c.listen.tls_key, "");
  EXPECT_EQ(c.listen.idle_timeout, 5min);
  EXPECT_EQ(c.queue.directory, "./var/spool");
  EXPECT_EQ(c.queue.max_age, std::chrono::days(5));
  EXPECT_EQ(c.queue.retry_min, 1min);
  EXPECT_EQ(c.queue.retry_max, 1h);
  EXPECT_EQ(c.delivery.port, 25);
  EXPECT_EQ(c.delivery.max_connections, 200u);
  EXPECT_EQ(c.delivery.max_connections_per_domain, 20u);
  EXPECT_EQ(c.delivery.connect_timeout, 30s);
  EXPECT_EQ(c.delivery.command_timeout, 5min);
  EXPECT_EQ(c.delivery.ca_file, "");
  EXPECT_EQ(c.delivery.helo_name, "");
  EXPECT_EQ(c.effective_helo_name(), c.hostname);
  EXPECT_TRUE(c.dns.servers.empty());
  EXPECT_EQ(c.dns.timeout, 5s);
  EXPECT_TRUE(c.sts.enabled);
  EXPECT_EQ(c.sts.cache_file, "./var/sts-cache");
  EXPECT_EQ(c.sts.policy_port, 443);
  EXPECT_EQ(c.sts.fetch_timeout, 60s);
  EXPECT_EQ(c.sts.max_policy_size, 65536u);
  EXPECT_EQ(c.log.level, LogLevel::info);
  EXPECT_EQ(c.log.format, LogFormat::text);
}

TEST(ConfigDefaults, EmptySectionsMeanDefaults) {
  const auto parsed = parse_config("[listen]\n[queue]\n[delivery]\n[dns]\n[sts]\n[log]\n");
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(to_toml(*parsed), to_toml(*parse_config("")));
}

constexpr const char* every_key_overridden = R"(
hostname = "relay.example.net"

[listen]
addresses = ["192.0.2.1:25", "[::1]:2525"]
allowed_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.9"]
max_message_size = 1048576
max_recipients = 50
max_connections = 10
tls_cert = "/etc/stsrelay/cert.pem"
tls_key = "/etc/stsrelay/key.pem"
idle_timeout = "90s"

[queue]
directory = "/var/spool/stsrelay"
max_age = "3d"
retry_min = "30s"
retry_max = "2h"

[delivery]
port = 2526
max_connections = 5
max_connections_per_domain = 2
connect_timeout = "1500ms"
command_timeout = "10m"
ca_file = "/tmp/ca.pem"
helo_name = "out.example.net"

[dns]
servers = ["127.0.0.1:5353", "[::1]:53"]
timeout = "2s"

[sts]
enabled = false
cache_file = "/var/lib/stsrelay/sts"
policy_port = 8443
fetch_timeout = "10s"
max_policy_size = 1000

[log]
level = "debug"
format = "json"
)";

TEST(ConfigOverrides, EveryKeyCanBeSet) {
  const auto parsed = parse_config(every_key_overridden);
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  const Config& c = *parsed;
  EXPECT_EQ(c.hostname, "relay.example.net");
  EXPECT_EQ(c.listen.addresses,
            (std::vector<Endpoint>{endpoint("192.0.2.1:25"), endpoint("[::1]:2525")}));
  EXPECT_EQ(c.listen.allowed_networks,
            (std::vector<Network>{network("10.0.0.0/8"), network("2001:db8::/32"),
                                  network("192.0.2.9/32")}));
  EXPECT_EQ(c.listen.max_message_size, 1048576u);
  EXPECT_EQ(c.listen.max_recipients, 50u);
  EXPECT_EQ(c.listen.max_connections, 10u);
  EXPECT_EQ(c.listen.tls_cert, "/etc/stsrelay/cert.pem");
  EXPECT_EQ(c.listen.tls_key, "/etc/stsrelay/key.pem");
  EXPECT_EQ(c.listen.idle_timeout, 90s);
  EXPECT_EQ(c.queue.directory, "/var/spool/stsrelay");
  EXPECT_EQ(c.queue.max_age, std::chrono::days(3));
  EXPECT_EQ(c.queue.retry_min, 30s);
  EXPECT_EQ(c.queue.retry_max, 2h);
  EXPECT_EQ(c.delivery.port, 2526);
  EXPECT_EQ(c.delivery.max_connections, 5u);
  EXPECT_EQ(c.delivery.max_connections_per_domain, 2u);
  EXPECT_EQ(c.delivery.connect_timeout, 1500ms);
  EXPECT_EQ(c.delivery.command_timeout, 10min);
  EXPECT_EQ(c.delivery.ca_file, "/tmp/ca.pem");
  EXPECT_EQ(c.delivery.helo_name, "out.example.net");
  EXPECT_EQ(c.effective_helo_name(), "out.example.net");
  EXPECT_EQ(c.dns.servers,
            (std::vector<Endpoint>{endpoint("127.0.0.1:5353"), endpoint("[::1]:53")}));
  EXPECT_EQ(c.dns.timeout, 2s);
  EXPECT_FALSE(c.sts.enabled);
  EXPECT_EQ(c.sts.cache_file, "/var/lib/stsrelay/sts");
  EXPECT_EQ(c.sts.policy_port, 8443);
  EXPECT_EQ(c.sts.fetch_timeout, 10s);
  EXPECT_EQ(c.sts.max_policy_size, 1000u);
  EXPECT_EQ(c.log.level, LogLevel::debug);
  EXPECT_EQ(c.log.format, LogFormat::json);
}

TEST(ConfigOverrides, DottedKeysAndInlineTablesWork) {
  const auto parsed = parse_config(
      "listen.max_recipients = 7\nlog = { level = \"warn\" }\nqueue.retry_min = \"1h\"\n");
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(parsed->listen.max_recipients, 7u);
  EXPECT_EQ(parsed->log.level, LogLevel::warn);
  EXPECT_EQ(parsed->queue.retry_min, 1h);
}

TEST(ConfigOverrides, EmptyListsWhereEmptyMeansSomething) {
  const auto parsed = parse_config("[dns]\nservers = []\n[listen]\nallowed_networks = []\n");
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_TRUE(parsed->dns.servers.empty());
  EXPECT_TRUE(parsed->listen.allowed_networks.empty());
}

struct GoodValue {
  const char* toml;
  const char* description;
};

class ConfigAccepts : public ::testing::TestWithParam<GoodValue> {};

TEST_P(ConfigAccepts, BoundaryValues) {
  const auto parsed = parse_config(GetParam().toml);
  EXPECT_TRUE(parsed) << GetParam().toml << " -> " << parsed.error().to_string();
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigAccepts,
    ::testing::Values(GoodValue{"hostname = \"localhost\"", "single label"},
                      GoodValue{"hostname = \"a-b.c9.example\"", "hyphen and digits"},
                      GoodValue{"hostname = \"MX1.Example.NET\"", "upper case"},
                      GoodValue{"[listen]\nmax_message_size = 1024", "smallest size"},
                      GoodValue{"[listen]\nmax_message_size = 1073741824", "largest size"},
                      GoodValue{"[listen]\nmax_recipients = 1", "one recipient"},
                      GoodValue{"[listen]\nmax_recipients = 100000", "most recipients"},
                      GoodValue{"[listen]\nmax_connections = 1", "one connection"},
                      GoodValue{"[listen]\nidle_timeout = \"1ms\"", "shortest duration"},
                      GoodValue{"[listen]\nidle_timeout = \"365d\"", "longest duration"},
                      GoodValue{"[listen]\ntls_cert = \"c\"\ntls_key = \"k\"", "both tls"},
                      GoodValue{"[queue]\nretry_min = \"1h\"\nretry_max = \"1h\"", "equal retries"},
                      GoodValue{"[delivery]\nport = 1", "port 1"},
                      GoodValue{"[delivery]\nport = 65535", "port 65535"},
                      GoodValue{"[delivery]\nhelo_name = \"\"", "helo from hostname"},
                      GoodValue{"[sts]\npolicy_port = 65535", "policy port"},
                      GoodValue{"[log]\nlevel = \"trace\"", "trace"},
                      GoodValue{"[log]\nlevel = \"error\"", "error"},
                      GoodValue{"[log]\nformat = \"text\"", "text"}));

struct BadValue {
  const char* toml;
  const char* key;
  const char* reason_contains;
};

class ConfigRejects : public ::testing::TestWithParam<BadValue> {};

TEST_P(ConfigRejects, NamingTheKey) {
  const auto& c = GetParam();
  const auto parsed = parse_config(c.toml);
  ASSERT_FALSE(parsed) << c.toml;
  EXPECT_EQ(parsed.error().key, c.key) << parsed.error().to_string();
  EXPECT_NE(parsed.error().message.find(c.reason_contains), std::string::npos)
      << parsed.error().to_string();
  EXPECT_EQ(parsed.error().to_string(), std::string(c.key) + ": " + parsed.error().message);
}

// Wrong types: one per key.
INSTANTIATE_TEST_SUITE_P(
    WrongType, ConfigRejects,
    ::testing::Values(
        BadValue{"hostname = 5", "hostname", "expected a string"},
        BadValue{"listen = 5", "listen", "expected a table"},
        BadValue{"queue = \"x\"", "queue", "expected a table"},
        BadValue{"delivery = []", "delivery", "expected a table"},
        BadValue{"dns = true", "dns", "expected a table"},
        BadValue{"sts = 1.5", "sts", "expected a table"},
        BadValue{"log = \"debug\"", "log", "expected a table"},
        BadValue{"[listen]\naddresses = \"127.0.0.1:25\"", "listen.addresses",
                 "expected an array of strings"},
        BadValue{"[listen]\naddresses = [25]", "listen.addresses", "expected an array of strings"},
        BadValue{"[listen]\nallowed_networks = \"10.0.0.0/8\"", "listen.allowed_networks",
                 "expected an array of strings"},
        BadValue{"[listen]\nallowed_networks = [\"10.0.0.0/8\", 5]", "listen.allowed_networks",
                 "expected an array of strings"},
        BadValue{"[listen]\nmax_message_size = \"50MB\"", "listen.max_message_size",
                 "expected an integer, got a string"},
        BadValue{"[listen]\nmax_recipients = 10.0", "listen.max_recipients",
                 "expected an integer, got a float"},
        BadValue{"[listen]\nmax_connections = true", "listen.max_connections",
                 "expected an integer"},
        BadValue{"[listen]\ntls_cert = 1", "listen.tls_cert", "expected a string"},
        BadValue{"[listen]\ntls_key = []", "listen.tls_key", "expected a string"},
        BadValue{"[listen]\nidle_timeout = 300", "listen.idle_timeout",
                 "expected a duration string like \"30s\""},
        BadValue{"[queue]\ndirectory = 1", "queue.directory", "expected a string"},
        BadValue{"[queue]\nmax_age = 5", "queue.max_age", "expected a duration string"},
        BadValue{"[queue]\nretry_min = 60", "queue.retry_min",
                 "expected a duration string like \"30s\""},
        BadValue{"[queue]\nretry_max = 1979-05-27", "queue.retry_max",
                 "expected a duration string"},
        BadValue{"[delivery]\nport = \"25\"", "delivery.port", "expected an integer"},
        BadValue{"[delivery]\nmax_connections = \"200\"", "delivery.max_connections",
                 "expected an integer"},
        BadValue{"[delivery]\nmax_connections_per_domain = 2.5",
                 "delivery.max_connections_per_domain", "expected an integer"},
        BadValue{"[delivery]\nconnect_timeout = 30", "delivery.connect_timeout",
                 "expected a duration string"},
        BadValue{"[delivery]\ncommand_timeout = {}", "delivery.command_timeout",
                 "expected a duration string"},
        BadValue{"[delivery]\nca_file = false", "delivery.ca_file", "expected a string"},
        BadValue{"[delivery]\nhelo_name = 1", "delivery.helo_name", "expected a string"},
        BadValue{"[dns]\nservers = \"127.0.0.1:53\"", "dns.servers", "expected an array"},
        BadValue{"[dns]\ntimeout = 5", "dns.timeout", "expected a duration string"},
        BadValue{"[sts]\nenabled = \"yes\"", "sts.enabled", "expected true or false"},
        BadValue{"[sts]\nenabled = 1", "sts.enabled", "expected true or false"},
        BadValue{"[sts]\ncache_file = 0", "sts.cache_file", "expected a string"},
        BadValue{"[sts]\npolicy_port = \"443\"", "sts.policy_port", "expected an integer"},
        BadValue{"[sts]\nfetch_timeout = 60", "sts.fetch_timeout", "expected a duration string"},
        BadValue{"[sts]\nmax_policy_size = \"64k\"", "sts.max_policy_size", "expected an integer"},
        BadValue{"[log]\nlevel = 1", "log.level", "expected a string"},
        BadValue{"[log]\nformat = [\"json\"]", "log.format", "expected a string"}));

// Out of range or otherwise invalid values: at least one per key.
INSTANTIATE_TEST_SUITE_P(
    OutOfRange, ConfigRejects,
    ::testing::Values(
        BadValue{"hostname = \"\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"relay example\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"under_score.example\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"-lead.example\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"trail-.example\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"a..b\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"relay.example.\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"192.0.2.1\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"[192.0.2.1]\"", "hostname", "not a domain name"},
        BadValue{"hostname = \"r\\u00e9lay.example\"", "hostname", "not a domain name"},
        BadValue{"hostname = "
                 "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\"",
                 "hostname", "not a domain name"},
        BadValue{"[listen]\naddresses = []", "listen.addresses", "at least one"},
        BadValue{"[listen]\naddresses = [\"localhost:25\"]", "listen.addresses",
                 "element 1 \"localhost:25\""},
        BadValue{"[listen]\naddresses = [\"127.0.0.1:25\", \"127.0.0.1\"]", "listen.addresses",
                 "element 2 \"127.0.0.1\": port missing"},
        BadValue{"[listen]\naddresses = [\"127.0.0.1:0\"]", "listen.addresses", "out of range"},
        BadValue{"[listen]\naddresses = [\"::1:25\"]", "listen.addresses", "bracketed"},
        BadValue{"[listen]\naddresses = [\"127.0.0.1:25\", \"127.0.0.1:25\"]", "listen.addresses",
                 "listed twice"},
        BadValue{"[listen]\nallowed_networks = [\"10.0.0.0/33\"]", "listen.allowed_networks",
                 "0..32"},
        BadValue{"[listen]\nallowed_networks = [\"10.1.0.0/8\"]", "listen.allowed_networks",
                 "did you mean 10.0.0.0/8?"},
        BadValue{"[listen]\nmax_message_size = 0", "listen.max_message_size", "out of range"},
        BadValue{"[listen]\nmax_message_size = 1023", "listen.max_message_size",
                 "1023 is out of range 1024..1073741824"},
        BadValue{"[listen]\nmax_message_size = 1073741825", "listen.max_message_size",
                 "out of range"},
        BadValue{"[listen]\nmax_message_size = -1", "listen.max_message_size", "out of range"},
        BadValue{"[listen]\nmax_recipients = 0", "listen.max_recipients", "out of range 1..100000"},
        BadValue{"[listen]\nmax_recipients = 100001", "listen.max_recipients", "out of range"},
        BadValue{"[listen]\nmax_connections = 0", "listen.max_connections", "out of range"},
        BadValue{"[listen]\nmax_connections = -5", "listen.max_connections", "out of range"},
        BadValue{"[listen]\ntls_cert = \"c.pem\"", "listen.tls_key", "must be set"},
        BadValue{"[listen]\ntls_key = \"k.pem\"", "listen.tls_cert", "must be set"},
        BadValue{"[listen]\nidle_timeout = \"0s\"", "listen.idle_timeout", "out of range"},
        BadValue{"[listen]\nidle_timeout = \"366d\"", "listen.idle_timeout", "out of range"},
        BadValue{"[listen]\nidle_timeout = \"5\"", "listen.idle_timeout", "not a duration"},
        BadValue{"[listen]\nidle_timeout = \"5 m\"", "listen.idle_timeout", "not a duration"},
        BadValue{"[listen]\nidle_timeout = \"1.5s\"", "listen.idle_timeout", "not a duration"},
        BadValue{"[listen]\nidle_timeout = \"-5s\"", "listen.idle_timeout", "not a duration"},
        BadValue{"[listen]\nidle_timeout = \"5w\"", "listen.idle_timeout", "not a duration"},
        BadValue{"[queue]\ndirectory = \"\"", "queue.directory", "must not be empty"},
        BadValue{"[queue]\nmax_age = \"0d\"", "queue.max_age", "out of range"},
        BadValue{"[queue]\nmax_age = \"99999999999999999999d\"", "queue.max_age", "too long"},
        BadValue{"[queue]\nretry_min = \"0s\"", "queue.retry_min", "out of range"},
        BadValue{"[queue]\nretry_max = \"0ms\"", "queue.retry_max", "out of range"},
        BadValue{"[queue]\nretry_min = \"2h\"", "queue.retry_min",
                 "2h must not exceed queue.retry_max (1h)"},
        BadValue{"[queue]\nretry_min = \"1m\"\nretry_max = \"30s\"", "queue.retry_min",
                 "must not exceed"},
        BadValue{"[delivery]\nport = 0", "delivery.port", "0 is out of range 1..65535"},
        BadValue{"[delivery]\nport = 65536", "delivery.port", "out of range"},
        BadValue{"[delivery]\nmax_connections = 0", "delivery.max_connections", "out of range"},
        BadValue{"[delivery]\nmax_connections_per_domain = 0",
                 "delivery.max_connections_per_domain", "out of range"},
        BadValue{"[delivery]\nconnect_timeout = \"0s\"", "delivery.connect_timeout",
                 "out of range"},
        BadValue{"[delivery]\ncommand_timeout = \"0m\"", "delivery.command_timeout",
                 "out of range"},
        BadValue{"[delivery]\nhelo_name = \"bad name\"", "delivery.helo_name", "not a domain name"},
        BadValue{"[dns]\nservers = [\"127.0.0.1\"]", "dns.servers", "port missing"},
        BadValue{"[dns]\nservers = [\"ns.example:53\"]", "dns.servers", "host names"},
        BadValue{"[dns]\ntimeout = \"0s\"", "dns.timeout", "out of range"},
        BadValue{"[sts]\ncache_file = \"\"", "sts.cache_file", "must not be empty"},
        BadValue{"[sts]\npolicy_port = 0", "sts.policy_port", "out of range"},
        BadValue{"[sts]\npolicy_port = 70000", "sts.policy_port", "out of range"},
        BadValue{"[sts]\nfetch_timeout = \"0s\"", "sts.fetch_timeout", "out of range"},
        BadValue{"[sts]\nmax_policy_size = 0", "sts.max_policy_size", "out of range"},
        BadValue{"[sts]\nmax_policy_size = 16777217", "sts.max_policy_size", "out of range"},
        BadValue{"[log]\nlevel = \"warning\"", "log.level",
                 "\"warning\" is not one of trace, debug, info, warn, error"},
        BadValue{"[log]\nlevel = \"INFO\"", "log.level", "is not one of"},
        BadValue{"[log]\nformat = \"xml\"", "log.format", "\"xml\" is not one of text, json"}));

// Unknown keys: in each section, at the top, and whole unknown sections.
INSTANTIATE_TEST_SUITE_P(
    UnknownKey, ConfigRejects,
    ::testing::Values(
        BadValue{"hostnme = \"x.example\"", "hostnme", "unknown key (did you mean hostname?)"},
        BadValue{"port = 25", "port", "unknown key"},
        BadValue{"[listner]\naddresses = []", "listner", "unknown section (did you mean listen?)"},
        BadValue{"[smtp]\n", "smtp", "unknown section"},
        BadValue{"[[queue2]]\n", "queue2", "unknown key"},
        BadValue{"[listen]\nmax_recipent = 5", "listen.max_recipent",
                 "unknown key (did you mean listen.max_recipients?)"},
        BadValue{"[listen.tls]\ncert = \"x\"", "listen.tls", "unknown key"},
        BadValue{"[queue]\ndir = \"x\"", "queue.dir", "unknown key"},
        BadValue{"[delivery]\nmx_port = 25", "delivery.mx_port", "unknown key"},
        BadValue{"[dns]\nserver = []", "dns.server", "unknown key (did you mean dns.servers?)"},
        BadValue{"[sts]\nenable = true", "sts.enable", "unknown key (did you mean sts.enabled?)"},
        BadValue{"[log]\nfile = \"/var/log/x\"", "log.file", "unknown key"},
        BadValue{"[log]\nlevel = \"info\"\nzzz = 1\naaa = 2\n", "log.zzz", "unknown key"},
        BadValue{"listen.hostname = \"x\"", "listen.hostname", "unknown key"}));

TEST(ConfigSyntax, ParseErrorsGiveLineAndColumn) {
  const auto parsed = parse_config("[listen]\nmax_recipients = 5\nbroken = = 3\n");
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().key, "");
  EXPECT_TRUE(parsed.error().message.starts_with("line 3, column ")) << parsed.error().message;
}

TEST(ConfigSyntax, DuplicateKeysAreParseErrors) {
  const auto parsed = parse_config("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
  ASSERT_FALSE(parsed);
  EXPECT_TRUE(parsed.error().message.starts_with("line 3")) << parsed.error().message;
}

struct DurationCase {
  const char* text;
  Duration value;
  const char* formatted;
};

class Durations : public ::testing::TestWithParam<DurationCase> {};

TEST_P(Durations, ParseAndFormatInTheLargestExactUnit) {
  const auto& c = GetParam();
  const auto parsed = parse_duration(c.text);
  ASSERT_TRUE(parsed) << parsed.error();
  EXPECT_EQ(*parsed, c.value);
  EXPECT_EQ(format_duration(*parsed), c.formatted);
  EXPECT_EQ(parse_duration(format_duration(*parsed)), parsed);
}

INSTANTIATE_TEST_SUITE_P(
    Table, Durations,
    ::testing::Values(DurationCase{"30s", 30s, "30s"}, DurationCase{"5m", 5min, "5m"},
                      DurationCase{"2h", 2h, "2h"}, DurationCase{"5d", std::chrono::days(5), "5d"},
                      DurationCase{"250ms", 250ms, "250ms"},
                      DurationCase{"1500ms", 1500ms, "1500ms"}, DurationCase{"60s", 1min, "1m"},
                      DurationCase{"90s", 90s, "90s"}, DurationCase{"120m", 2h, "2h"},
                      DurationCase{"48h", std::chrono::days(2), "2d"},
                      DurationCase{"1000ms", 1s, "1s"}, DurationCase{"0s", 0s, "0s"},
                      DurationCase{"007s", 7s, "7s"}));

TEST(Durations, RejectsMalformed) {
  for (const char* text : {"", "s", "30", "30 s", " 30s", "30s ", "30S", "-1s", "+1s", "1.5h",
                           "1h30m", "5w", "30sec", "ms"}) {
    EXPECT_FALSE(parse_duration(text)) << text;
  }
  EXPECT_FALSE(parse_duration("9223372036854775808ms"));
  EXPECT_FALSE(parse_duration("106751991167301d"));
  EXPECT_TRUE(parse_duration("9223372036854775807ms"));
}

TEST(ConfigToToml, DefaultsRoundTrip) {
  const auto config = parse_config("").value();
  const auto text = to_toml(config);
  const auto again = parse_config(text);
  ASSERT_TRUE(again) << again.error().to_string() << "\n" << text;
  EXPECT_EQ(to_toml(*again), text);
  EXPECT_EQ(again->listen.addresses, config.listen.addresses);
  EXPECT_EQ(again->listen.allowed_networks, config.listen.allowed_networks);
}

TEST(ConfigToToml, EveryKeyRoundTrips) {
  const auto config = parse_config(every_key_overridden).value();
  const auto text = to_toml(config);
  const auto again = parse_config(text);
  ASSERT_TRUE(again) << again.error().to_string() << "\n" << text;
  EXPECT_EQ(to_toml(*again), text);
  EXPECT_EQ(again->hostname, "relay.example.net");
  EXPECT_EQ(again->listen.addresses, config.listen.addresses);
  EXPECT_EQ(again->listen.allowed_networks, config.listen.allowed_networks);
  EXPECT_EQ(again->dns.servers, config.dns.servers);
  EXPECT_EQ(again->delivery.connect_timeout, 1500ms);
  EXPECT_FALSE(again->sts.enabled);
  EXPECT_EQ(again->log.format, LogFormat::json);
}

TEST(ConfigToToml, StringsNeedingEscapesRoundTrip) {
  Config config = parse_config("").value();
  config.queue.directory = "/tmp/with \"quotes\" and \\ back\tslash";
  config.delivery.ca_file = "/tmp/ca\u00e9.pem";
  const auto again = parse_config(to_toml(config));
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_EQ(again->queue.directory, config.queue.directory);
  EXPECT_EQ(again->delivery.ca_file, config.delivery.ca_file);
}

TEST(ConfigToToml, PrintsSectionsInSpecOrder) {
  const auto text = to_toml(parse_config("").value());
  const auto at = [&](const char* needle) { return text.find(needle); };
  EXPECT_LT(at("hostname ="), at("[listen]"));
  EXPECT_LT(at("[listen]"), at("[queue]"));
  EXPECT_LT(at("[queue]"), at("[delivery]"));
  EXPECT_LT(at("[delivery]"), at("[dns]"));
  EXPECT_LT(at("[dns]"), at("[sts]"));
  EXPECT_LT(at("[sts]"), at("[log]"));
  EXPECT_NE(at("idle_timeout = \"5m\""), std::string::npos);
  EXPECT_NE(at("max_age = \"5d\""), std::string::npos);
  EXPECT_NE(at("allowed_networks = [\"127.0.0.0/8\", \"::1/128\"]"), std::string::npos);
}

TEST(LoadConfig, ReadsTheGivenFile) {
  testing::TempDir dir;
  const auto file = dir.path() / "stsrelay.toml";
  std::ofstream(file) << "[listen]\nmax_recipients = 3\n";
  const auto config = load_config(file);
  ASSERT_TRUE(config) << config.error().to_string();
  EXPECT_EQ(config->listen.max_recipients, 3u);
  EXPECT_EQ(effective_config_file(file), file);
}

TEST(LoadConfig, AMissingExplicitFileIsAnError) {
  testing::TempDir dir;
  const auto file = dir.path() / "absent.toml";
  const auto config = load_config(file);
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find(file.string()), std::string::npos);
  EXPECT_NE(config.error().message.find("No such file"), std::string::npos);
}

TEST(LoadConfig, ADirectoryIsAnError) {
  testing::TempDir dir;
  EXPECT_FALSE(load_config(dir.path()));
}

TEST(LoadConfig, ParseErrorsNameTheFile) {
  testing::TempDir dir;
  const auto file = dir.path() / "bad.toml";
  std::ofstream(file) << "[listen\n";
  const auto config = load_config(file);
  ASSERT_FALSE(config);
  EXPECT_TRUE(config.error().message.starts_with(file.string() + ": line 1"))
      << config.error().message;
}

TEST(LoadConfig, NoFileMeansTheDefaultFileOrDefaults) {
  const auto config = load_config({});
  if (std::filesystem::exists(default_config_file)) {
    EXPECT_EQ(effective_config_file({}), default_config_file);
  } else {
    ASSERT_TRUE(config) << config.error().to_string();
    EXPECT_EQ(to_toml(*config), to_toml(parse_config("").value()));
    EXPECT_EQ(effective_config_file({}), "");
  }
}

}  // namespace
}  // namespace stsrelay::relay
