#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "relay/endpoint.hpp"
#include "relay/network.hpp"

namespace stsrelay::relay {

// The configuration of SPEC.md, with its defaults. Durations are kept in
// milliseconds so that "1500ms" survives a round trip.
using Duration = std::chrono::milliseconds;

struct ListenConfig {
  std::vector<Endpoint> addresses = {Endpoint::parse("127.0.0.1:2525").value()};
  std::vector<Network> allowed_networks = {Network::parse("127.0.0.0/8").value(),
                                           Network::parse("::1/128").value()};
  std::uint64_t max_message_size = 52428800;
  std::uint64_t max_recipients = 1000;
  std::uint64_t max_connections = 1000;
  std::string tls_cert;
  std::string tls_key;
  Duration idle_timeout = std::chrono::minutes(5);
};

struct QueueConfig {
  std::filesystem::path directory = "./var/spool";
  Duration max_age = std::chrono::days(5);
  Duration retry_min = std::chrono::minutes(1);
  Duration retry_max = std::chrono::hours(1);
};

struct DeliveryConfig {
  std::uint16_t port = 25;
  std::uint64_t max_connections = 200;
  std::uint64_t max_connections_per_domain = 20;
  Duration connect_timeout = std::chrono::seconds(30);
  Duration command_timeout = std::chrono::minutes(5);
  std::string ca_file;
  std::string helo_name;  // empty: hostname
};

struct DnsConfig {
  std::vector<Endpoint> servers;  // empty: /etc/resolv.conf
  Duration timeout = std::chrono::seconds(5);
};

struct StsConfig {
  bool enabled = true;
  std::filesystem::path cache_file = "./var/sts-cache";
  std::uint16_t policy_port = 443;
  Duration fetch_timeout = std::chrono::seconds(60);
  std::uint64_t max_policy_size = 65536;
};

enum class LogLevel { trace, debug, info, warn, error };
enum class LogFormat { text, json };

struct LogConfig {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::text;
};

struct Config {
  std::string hostname;  // default: the host's FQDN (default_hostname()), filled in by parse_config
  ListenConfig listen;
  QueueConfig queue;
  DeliveryConfig delivery;
  DnsConfig dns;
  StsConfig sts;
  LogConfig log;

  const std::string& effective_helo_name() const {
    return delivery.helo_name.empty() ? hostname : delivery.helo_name;
  }
};

// A configuration error names the key ("listen.max_recipients") and the reason.
struct ConfigError {
  std::string key;  // empty when the file itself is unreadable or not TOML
  std::string message;
  std::string to_string() const;
};

tl::expected<Config, ConfigError> parse_config(std::string_view toml_text);

// Reads FILE; with no file given, /etc/stsrelay/stsrelay.toml if it exists,
// else the defaults. An explicitly given file that is missing is an error.
tl::expected<Config, ConfigError> load_config(const std::filesystem::path& file);
inline constexpr const char* default_config_file = "/etc/stsrelay/stsrelay.toml";

// The file load_config reads for FILE: FILE itself when given, else
// default_config_file if it exists, else empty (built-in defaults).
std::filesystem::path effective_config_file(const std::filesystem::path& file);

// The host's FQDN (getaddrinfo's canonical name of gethostname), else the bare
// host name, else "localhost"; computed once. parse_config fills it in when
// the file sets no hostname.
const std::string& default_hostname();

// The effective configuration as TOML that parse_config reads back unchanged.
std::string to_toml(const Config& config);

// "30s", "5m", "2h", "5d", "250ms"; and the inverse, in the largest exact unit.
tl::expected<Duration, std::string> parse_duration(std::string_view text);
std::string format_duration(Duration duration);

std::string_view to_string(LogLevel level);
std::string_view to_string(LogFormat format);

}  // namespace stsrelay::relay
