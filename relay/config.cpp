#include "relay/config.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <netdb.h>
#include <optional>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <system_error>
#include <unistd.h>

#include <toml++/toml.h>

namespace stsrelay::relay {

namespace {

using namespace std::chrono_literals;

// Bounds shared by many keys. The upper bounds only keep arithmetic on time
// points and sizes far from overflow; they are not tuning advice.
constexpr Duration shortest_duration = 1ms;
constexpr Duration longest_duration = std::chrono::days(365);
constexpr std::uint64_t connection_limit = 100000;

struct Unit {
  std::string_view suffix;
  Duration length;
};
// Largest first: format_duration picks the first that divides exactly.
constexpr std::array<Unit, 5> duration_units = {{
    {"d", std::chrono::days(1)},
    {"h", std::chrono::hours(1)},
    {"m", std::chrono::minutes(1)},
    {"s", std::chrono::seconds(1)},
    {"ms", std::chrono::milliseconds(1)},
}};

std::string toml_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          static constexpr char hex[] = "0123456789ABCDEF";
          out += "\\u00";
          out += hex[byte >> 4];
          out += hex[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool is_domain_name(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  std::string_view last_label;
  std::size_t start = 0;
  while (true) {
    const auto dot = name.find('.', start);
    const auto label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (const char c : label) {
      const bool letter_or_digit =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!letter_or_digit && c != '-') {
        return false;
      }
    }
    last_label = label;
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  // An all-numeric last label would make "192.0.2.1" pass for a name (RFC 3696 §2).
  return !std::all_of(last_label.begin(), last_label.end(),
                      [](char c) { return c >= '0' && c <= '9'; });
}

std::string compute_default_hostname() {
  std::array<char, 256> buffer{};
  if (gethostname(buffer.data(), buffer.size() - 1) != 0) {
    return "localhost";
  }
  const std::string short_name(buffer.data());
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_CANONNAME;
  addrinfo* result = nullptr;
  std::string canonical;
  if (getaddrinfo(short_name.c_str(), nullptr, &hints, &result) == 0) {
    if (result != nullptr && result->ai_canonname != nullptr) {
      canonical = result->ai_canonname;
    }
    freeaddrinfo(result);
  }
  if (is_domain_name(canonical)) {
    return canonical;
  }
  if (is_domain_name(short_name)) {
    return short_name;
  }
  return "localhost";
}

std::string_view node_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date or time";
  }
}

// Reads the keys of one table, remembering which it was asked for, so that
// whatever is left over is an unknown key. Stops at the first error.
class TableReader {
 public:
  TableReader(const toml::table* table, std::string prefix)
      : table_(table), prefix_(std::move(prefix)) {}

  void string(std::string_view key, std::string& out) {
    if (const auto* node = lookup(key)) {
      if (const auto* value = node->as_string()) {
        out = value->get();
      } else {
        fail(key, "expected a string, got " + std::string(node_type_name(*node)));
      }
    }
  }

  void non_empty_string(std::string_view key, std::string& out) {
    std::string value = out;
    string(key, value);
    if (!error_ && value.empty()) {
      fail(key, "must not be empty");
      return;
    }
    out = value;
  }

  void boolean(std::string_view key, bool& out) {
    if (const auto* node = lookup(key)) {
      if (const auto* value = node->as_boolean()) {
        out = value->get();
      } else {
        fail(key, "expected true or false, got " + std::string(node_type_name(*node)));
      }
    }
  }

  void integer(std::string_view key, std::uint64_t& out, std::uint64_t min, std::uint64_t max) {
    if (const auto* node = lookup(key)) {
      const auto* value = node->as_integer();
      if (value == nullptr) {
        fail(key, "expected an integer, got " + std::string(node_type_name(*node)));
        return;
      }
      const std::int64_t number = value->get();
      if (number < 0 || static_cast<std::uint64_t>(number) < min ||
          static_cast<std::uint64_t>(number) > max) {
        fail(key, std::to_string(number) + " is out of range " + std::to_string(min) + ".." +
                      std::to_string(max));
        return;
      }
      out = static_cast<std::uint64_t>(number);
    }
  }

  void port(std::string_view key, std::uint16_t& out) {
    std::uint64_t value = out;
    integer(key, value, 1, 65535);
    out = static_cast<std::uint16_t>(value);
  }

  void duration(std::string_view key, Duration& out) {
    if (const auto* node = lookup(key)) {
      const auto* text = node->as_string();
      if (text == nullptr) {
        fail(key,
             "expected a duration string like \"30s\", got " + std::string(node_type_name(*node)));
        return;
      }
      auto value = parse_duration(text->get());
      if (!value) {
        fail(key, value.error());
        return;
      }
      if (*value < shortest_duration || *value > longest_duration) {
        fail(key, toml_string(text->get()) + " is out of range " +
                      format_duration(shortest_duration) + ".." +
                      format_duration(longest_duration));
        return;
      }
      out = *value;
    }
  }

  void strings(std::string_view key, std::vector<std::string>& out) {
    if (const auto* node = lookup(key)) {
      const auto* array = node->as_array();
      if (array == nullptr || !array->is_homogeneous(toml::node_type::string)) {
        // An empty array is homogeneous in no type.
        if (array == nullptr || !array->empty()) {
          fail(key, "expected an array of strings");
          return;
        }
      }
      out.clear();
      for (const auto& element : *array) {
        out.push_back(element.as_string()->get());
      }
    }
  }

  template <typename T>
  void parsed_list(std::string_view key, std::vector<T>& out) {
    std::vector<std::string> texts;
    bool present = table_ != nullptr && table_->contains(key);
    strings(key, texts);
    if (error_ || !present) {
      return;
    }
    std::vector<T> values;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      auto value = T::parse(texts[i]);
      if (!value) {
        fail(key, "element " + std::to_string(i + 1) + " " + toml_string(texts[i]) + ": " +
                      value.error());
        return;
      }
      values.push_back(*value);
    }
    out = std::move(values);
  }

  void fail(std::string_view key, std::string message) {
    if (!error_) {
      error_ = ConfigError{full_key(key), std::move(message)};
    }
  }

  // The first key of the table (in file order) that no one asked for.
  void reject_unknown_keys() {
    if (error_ || table_ == nullptr) {
      return;
    }
    const toml::key* first = nullptr;
    for (const auto& [key, node] : *table_) {
      if (known_.contains(key.str())) {
        continue;
      }
      if (first == nullptr || key.source().begin < first->source().begin) {
        first = &key;
      }
    }
    if (first == nullptr) {
      return;
    }
    const auto* node = table_->get(first->str());
    std::string message =
        node != nullptr && node->is_table() && prefix_.empty() ? "unknown section" : "unknown key";
    std::optional<std::string> suggestion;
    std::size_t best = 3;
    for (const auto& candidate : known_) {
      const auto distance = edit_distance(first->str(), candidate);
      if (distance < best) {
        best = distance;
        suggestion = full_key(candidate);
      }
    }
    if (suggestion) {
      message += " (did you mean " + *suggestion + "?)";
    }
    error_ = ConfigError{full_key(first->str()), std::move(message)};
  }

  // A sub-table; absent is fine (all defaults), another type is an error.
  const toml::table* table(std::string_view key) {
    if (const auto* node = lookup(key)) {
      if (const auto* sub = node->as_table()) {
        return sub;
      }
      fail(key, "expected a table ([" + std::string(key) + "]), got " +
                    std::string(node_type_name(*node)));
    }
    return nullptr;
  }

  bool ok() const { return !error_.has_value(); }
  const std::optional<ConfigError>& error() const { return error_; }
  void take_error_from(const TableReader& other) {
    if (!error_ && other.error_) {
      error_ = other.error_;
    }
  }

  std::string full_key(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

 private:
  const toml::node* lookup(std::string_view key) {
    known_.emplace(key);
    if (error_ || table_ == nullptr) {
      return nullptr;
    }
    return table_->get(key);
  }

  const toml::table* table_;
  std::string prefix_;
  std::set<std::string, std::less<>> known_;
  std::optional<ConfigError> error_;
};

void read_listen(TableReader& reader, ListenConfig& listen) {
  reader.parsed_list("addresses", listen.addresses);
  reader.parsed_list("allowed_networks", listen.allowed_networks);
  reader.integer("max_message_size", listen.max_message_size, 1024, std::uint64_t{1} << 30);
  reader.integer("max_recipients", listen.max_recipients, 1, 100000);
  reader.integer("max_connections", listen.max_connections, 1, connection_limit);
  reader.string("tls_cert", listen.tls_cert);
  reader.string("tls_key", listen.tls_key);
  reader.duration("idle_timeout", listen.idle_timeout);
  reader.reject_unknown_keys();
  if (!reader.ok()) {
    return;
  }
  if (listen.addresses.empty()) {
    reader.fail("addresses", "must list at least one address");
  }
  for (std::size_t i = 0; i < listen.addresses.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (listen.addresses[i] == listen.addresses[j]) {
        reader.fail("addresses", listen.addresses[i].to_string() + " is listed twice");
      }
    }
  }
  if (!listen.tls_cert.empty() && listen.tls_key.empty()) {
    reader.fail("tls_key", "must be set when listen.tls_cert is set");
  }
  if (listen.tls_cert.empty() && !listen.tls_key.empty()) {
    reader.fail("tls_cert", "must be set when listen.tls_key is set");
  }
}

void read_queue(TableReader& reader, QueueConfig& queue) {
  std::string directory = queue.directory.string();
  reader.non_empty_string("directory", directory);
  queue.directory = directory;
  reader.duration("max_age", queue.max_age);
  reader.duration("retry_min", queue.retry_min);
  reader.duration("retry_max", queue.retry_max);
  reader.reject_unknown_keys();
  if (reader.ok() && queue.retry_min > queue.retry_max) {
    reader.fail("retry_min", format_duration(queue.retry_min) +
                                 " must not exceed queue.retry_max (" +
                                 format_duration(queue.retry_max) + ")");
  }
}

void read_delivery(TableReader& reader, DeliveryConfig& delivery) {
  reader.port("port", delivery.port);
  reader.integer("max_connections", delivery.max_connections, 1, connection_limit);
  reader.integer("max_connections_per_domain", delivery.max_connections_per_domain, 1,
                 connection_limit);
  reader.duration("connect_timeout", delivery.connect_timeout);
  reader.duration("command_timeout", delivery.command_timeout);
  reader.string("ca_file", delivery.ca_file);
  reader.string("helo_name", delivery.helo_name);
  reader.reject_unknown_keys();
  if (reader.ok() && !delivery.helo_name.empty() && !is_domain_name(delivery.helo_name)) {
    reader.fail("helo_name", toml_string(delivery.helo_name) +
                                 " is not a domain name (letters, digits, '-', dot-separated)");
  }
}

void read_dns(TableReader& reader, DnsConfig& dns) {
  reader.parsed_list("servers", dns.servers);
  reader.duration("timeout", dns.timeout);
  reader.reject_unknown_keys();
}

void read_sts(TableReader& reader, StsConfig& sts) {
  reader.boolean("enabled", sts.enabled);
  std::string cache_file = sts.cache_file.string();
  reader.non_empty_string("cache_file", cache_file);
  sts.cache_file = cache_file;
  reader.port("policy_port", sts.policy_port);
  reader.duration("fetch_timeout", sts.fetch_timeout);
  reader.integer("max_policy_size", sts.max_policy_size, 1, std::uint64_t{16} << 20);
  reader.reject_unknown_keys();
}

void read_log(TableReader& reader, LogConfig& log) {
  std::string level(to_string(log.level));
  reader.string("level", level);
  std::string format(to_string(log.format));
  reader.string("format", format);
  reader.reject_unknown_keys();
  if (!reader.ok()) {
    return;
  }
  constexpr std::array levels = {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn,
                                 LogLevel::error};
  const auto level_match = std::find_if(levels.begin(), levels.end(), [&](LogLevel candidate) {
    return to_string(candidate) == level;
  });
  if (level_match == levels.end()) {
    reader.fail("level", toml_string(level) + " is not one of trace, debug, info, warn, error");
    return;
  }
  log.level = *level_match;
  if (format == "text") {
    log.format = LogFormat::text;
  } else if (format == "json") {
    log.format = LogFormat::json;
  } else {
    reader.fail("format", toml_string(format) + " is not one of text, json");
  }
}

template <typename T>
std::string toml_list(const std::vector<T>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    out += (i == 0 ? "" : ", ") + toml_string(values[i].to_string());
  }
  return out + "]";
}

}  // namespace

std::string ConfigError::to_string() const {
  return key.empty() ? message : key + ": " + message;
}

const std::string& default_hostname() {
  static const std::string name = compute_default_hostname();
  return name;
}

tl::expected<Config, ConfigError> parse_config(std::string_view toml_text) {
  toml::table document;
  try {
    document = toml::parse(toml_text);
  } catch (const toml::parse_error& error) {
    const auto& begin = error.source().begin;
    return tl::unexpected(ConfigError{"", "line " + std::to_string(begin.line) + ", column " +
                                              std::to_string(begin.column) + ": " +
                                              std::string(error.description())});
  }

  Config config;
  TableReader top(&document, "");
  top.string("hostname", config.hostname);
  struct Section {
    std::string_view name;
    void (*read)(TableReader&, Config&);
  };
  const std::array<Section, 6> sections = {{
      {"listen", [](TableReader& r, Config& c) { read_listen(r, c.listen); }},
      {"queue", [](TableReader& r, Config& c) { read_queue(r, c.queue); }},
      {"delivery", [](TableReader& r, Config& c) { read_delivery(r, c.delivery); }},
      {"dns", [](TableReader& r, Config& c) { read_dns(r, c.dns); }},
      {"sts", [](TableReader& r, Config& c) { read_sts(r, c.sts); }},
      {"log", [](TableReader& r, Config& c) { read_log(r, c.log); }},
  }};
  for (const auto& section : sections) {
    TableReader reader(top.table(section.name), std::string(section.name));
    section.read(reader, config);
    top.take_error_from(reader);
  }
  top.reject_unknown_keys();
  if (top.ok() && document.contains("hostname") && !is_domain_name(config.hostname)) {
    top.fail("hostname", toml_string(config.hostname) +
                             " is not a domain name (letters, digits, '-', dot-separated)");
  }
  if (!top.ok()) {
    return tl::unexpected(*top.error());
  }
  if (config.hostname.empty()) {
    config.hostname = default_hostname();
  }
  return config;
}

std::filesystem::path effective_config_file(const std::filesystem::path& file) {
  if (!file.empty()) {
    return file;
  }
  std::error_code error;
  if (std::filesystem::exists(default_config_file, error)) {
    return default_config_file;
  }
  return {};
}

tl::expected<Config, ConfigError> load_config(const std::filesystem::path& file) {
  const auto path = effective_config_file(file);
  if (path.empty()) {
    return parse_config("");
  }
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return tl::unexpected(ConfigError{"", path.string() + ": is a directory, not a config file"});
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return tl::unexpected(ConfigError{"", path.string() + ": " + std::strerror(errno)});
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return tl::unexpected(ConfigError{"", path.string() + ": read error"});
  }
  auto config = parse_config(text.str());
  if (!config && config.error().key.empty()) {
    config.error().message = path.string() + ": " + config.error().message;
  }
  return config;
}

std::string to_toml(const Config& config) {
  std::ostringstream out;
  const auto duration = [](Duration value) { return toml_string(format_duration(value)); };
  if (!config.hostname.empty()) {
    out << "hostname = " << toml_string(config.hostname) << "\n";
  }
  out << "\n[listen]\n"
      << "addresses = " << toml_list(config.listen.addresses) << "\n"
      << "allowed_networks = " << toml_list(config.listen.allowed_networks) << "\n"
      << "max_message_size = " << config.listen.max_message_size << "\n"
      << "max_recipients = " << config.listen.max_recipients << "\n"
      << "max_connections = " << config.listen.max_connections << "\n"
      << "tls_cert = " << toml_string(config.listen.tls_cert) << "\n"
      << "tls_key = " << toml_string(config.listen.tls_key) << "\n"
      << "idle_timeout = " << duration(config.listen.idle_timeout) << "\n";
  out << "\n[queue]\n"
      << "directory = " << toml_string(config.queue.directory.string()) << "\n"
      << "max_age = " << duration(config.queue.max_age) << "\n"
      << "retry_min = " << duration(config.queue.retry_min) << "\n"
      << "retry_max = " << duration(config.queue.retry_max) << "\n";
  out << "\n[delivery]\n"
      << "port = " << config.delivery.port << "\n"
      << "max_connections = " << config.delivery.max_connections << "\n"
      << "max_connections_per_domain = " << config.delivery.max_connections_per_domain << "\n"
      << "connect_timeout = " << duration(config.delivery.connect_timeout) << "\n"
      << "command_timeout = " << duration(config.delivery.command_timeout) << "\n"
      << "ca_file = " << toml_string(config.delivery.ca_file) << "\n"
      << "helo_name = " << toml_string(config.delivery.helo_name) << "\n";
  out << "\n[dns]\n"
      << "servers = " << toml_list(config.dns.servers) << "\n"
      << "timeout = " << duration(config.dns.timeout) << "\n";
  out << "\n[sts]\n"
      << "enabled = " << (config.sts.enabled ? "true" : "false") << "\n"
      << "cache_file = " << toml_string(config.sts.cache_file.string()) << "\n"
      << "policy_port = " << config.sts.policy_port << "\n"
      << "fetch_timeout = " << duration(config.sts.fetch_timeout) << "\n"
      << "max_policy_size = " << config.sts.max_policy_size << "\n";
  out << "\n[log]\n"
      << "level = " << toml_string(to_string(config.log.level)) << "\n"
      << "format = " << toml_string(to_string(config.log.format)) << "\n";
  return out.str();
}

tl::expected<Duration, std::string> parse_duration(std::string_view text) {
  const auto malformed = [&] {
    return tl::unexpected(toml_string(text) +
                          " is not a duration like \"30s\" (an integer and one of ms, s, m, h, d)");
  };
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    ++digits;
  }
  if (digits == 0) {
    return malformed();
  }
  const auto suffix = text.substr(digits);
  const auto unit = std::find_if(duration_units.begin(), duration_units.end(),
                                 [&](const Unit& candidate) { return candidate.suffix == suffix; });
  if (unit == duration_units.end()) {
    return malformed();
  }
  std::int64_t count = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + digits, count);
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / unit->length.count();
  if (error != std::errc() || end != text.data() + digits || count > limit) {
    return tl::unexpected(toml_string(text) + " is too long a duration");
  }
  return Duration(count * unit->length.count());
}

std::string format_duration(Duration duration) {
  if (duration.count() == 0) {
    return "0s";
  }
  for (const auto& unit : duration_units) {
    if (duration.count() % unit.length.count() == 0) {
      return std::to_string(duration.count() / unit.length.count()) + std::string(unit.suffix);
    }
  }
  return std::to_string(duration.count()) + "ms";
}

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::trace:
      return "trace";
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warn:
      return "warn";
    case LogLevel::error:
      return "error";
  }
  return "info";
}

std::string_view to_string(LogFormat format) {
  return format == LogFormat::json ? "json" : "text";
}

}  // namespace stsrelay::relay
