#include "relay/event_log.hpp"

#include <atomic>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/formatter.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace stsrelay::relay {

namespace {

// Events go through their own logger so that the formatter can tell a
// pre-rendered event from free text logged with spdlog::info() and friends.
constexpr std::string_view event_logger_name = "stsrelay.event";
constexpr std::string_view general_logger_name = "stsrelay";

std::atomic<LogFormat> current_format{LogFormat::text};

constexpr std::string_view level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace:
      return spdlog::level::trace;
    case LogLevel::debug:
      return spdlog::level::debug;
    case LogLevel::info:
      return spdlog::level::info;
    case LogLevel::warn:
      return spdlog::level::warn;
    case LogLevel::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::string iso8601_utc(std::chrono::system_clock::time_point time) {
  const auto since_epoch =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch());
  const auto seconds = std::chrono::floor<std::chrono::seconds>(since_epoch);
  const auto millis = (since_epoch - seconds).count();
  const std::time_t whole = static_cast<std::time_t>(seconds.count());
  std::tm utc{};
  gmtime_r(&whole, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);
}

// The length of the well-formed UTF-8 sequence at the start of TEXT, or
// nothing (overlong forms, surrogates and code points past U+10FFFF are not).
std::optional<std::size_t> utf8_sequence_length(std::string_view text, char32_t& code_point) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  char32_t min = 0;
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  } else if ((lead & 0xe0) == 0xc0) {
    length = 2;
    code_point = lead & 0x1f;
    min = 0x80;
  } else if ((lead & 0xf0) == 0xe0) {
    length = 3;
    code_point = lead & 0x0f;
    min = 0x800;
  } else if ((lead & 0xf8) == 0xf0) {
    length = 4;
    code_point = lead & 0x07;
    min = 0x10000;
  } else {
    return std::nullopt;
  }
  if (text.size() < length) {
    return std::nullopt;
  }
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) {
      return std::nullopt;
    }
    code_point = (code_point << 6) | (byte(i) & 0x3f);
  }
  if (code_point < min || code_point > 0x10ffff || (code_point >= 0xd800 && code_point <= 0xdfff)) {
    return std::nullopt;
  }
  return length;
}

void append_hex(std::string& out, std::string_view prefix, unsigned value, int digits) {
  static constexpr char hex[] = "0123456789abcdef";
  out += prefix;
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) {
    out += hex[(value >> shift) & 0xf];
  }
}

// Escapes what could break or fake a log line: control characters (CR and LF
// above all), the Unicode line breaks, backslashes, invalid UTF-8. With
// escape_quotes, also '"', for use inside a quoted value.
std::string escaped(std::string_view text, bool escape_quotes) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    char32_t code_point = 0;
    const auto length = utf8_sequence_length(text.substr(i), code_point);
    if (!length) {
      append_hex(out, "\\x", static_cast<unsigned char>(text[i]), 2);
      ++i;
      continue;
    }
    switch (code_point) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += escape_quotes ? "\\\"" : "\"";
        break;
      default:
        if (code_point < 0x20 || code_point == 0x7f) {
          append_hex(out, "\\x", static_cast<unsigned>(code_point), 2);
        } else if ((code_point >= 0x80 && code_point <= 0x9f) || code_point == 0x2028 ||
                   code_point == 0x2029) {
          append_hex(out, "\\u", static_cast<unsigned>(code_point), 4);
        } else {
          out.append(text.substr(i, *length));
        }
    }
    i += *length;
  }
  return out;
}

std::string text_value(std::string_view value) {
  const std::string plain = escaped(value, false);
  const bool needs_quotes =
      value.empty() || plain != value || value.find_first_of(" \"=") != std::string_view::npos;
  if (!needs_quotes) {
    return plain;
  }
  return "\"" + escaped(value, true) + "\"";
}

std::string text_value(const FieldValue& value) {
  struct Visitor {
    std::string operator()(std::string_view text) const { return text_value(text); }
    std::string operator()(std::int64_t number) const { return std::to_string(number); }
    std::string operator()(std::uint64_t number) const { return std::to_string(number); }
    std::string operator()(bool flag) const { return flag ? "true" : "false"; }
    std::string operator()(const std::vector<std::string>& items) const {
      std::string joined;
      for (std::size_t i = 0; i < items.size(); ++i) {
        joined += (i == 0 ? "" : ",") + items[i];
      }
      return text_value(std::string_view(joined));
    }
  };
  return std::visit(Visitor{}, value);
}

nlohmann::ordered_json json_value(const FieldValue& value) {
  struct Visitor {
    nlohmann::ordered_json operator()(std::string_view text) const { return std::string(text); }
    nlohmann::ordered_json operator()(std::int64_t number) const { return number; }
    nlohmann::ordered_json operator()(std::uint64_t number) const { return number; }
    nlohmann::ordered_json operator()(bool flag) const { return flag; }
    nlohmann::ordered_json operator()(const std::vector<std::string>& items) const { return items; }
  };
  return std::visit(Visitor{}, value);
}

std::string dump_json(const nlohmann::ordered_json& object) {
  // Invalid UTF-8 (a client's bytes) becomes U+FFFD instead of an exception.
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(LogFormat format) : format_(format) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string time = iso8601_utc(msg.time);
    const std::string_view level = level_name(msg.level);
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const bool is_event =
        std::string_view(msg.logger_name.data(), msg.logger_name.size()) == event_logger_name;
    std::string line;
    if (format_ == LogFormat::json) {
      if (is_event && payload.starts_with('{')) {
        nlohmann::ordered_json head = {{"time", time}, {"level", level}};
        line = dump_json(head);
        line.pop_back();  // '}'
        line += payload.size() > 2 ? "," : "";
        line += payload.substr(1);
      } else {
        line = dump_json({{"time", time}, {"level", level}, {"message", std::string(payload)}});
      }
    } else {
      line = time + " " + std::string(level) + " " +
             (is_event ? std::string(payload) : escaped(payload, false));
    }
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LineFormatter>(format_);
  }

 private:
  LogFormat format_;
};

struct Loggers {
  std::shared_ptr<spdlog::logger> events;
  std::shared_ptr<spdlog::logger> general;
};

std::mutex setup_mutex;

Loggers& loggers() {
  static Loggers instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_formatter(std::make_unique<LineFormatter>(LogFormat::text));
    Loggers made{std::make_shared<spdlog::logger>(std::string(event_logger_name), sink),
                 std::make_shared<spdlog::logger>(std::string(general_logger_name), sink)};
    for (const auto& logger : {made.events, made.general}) {
      logger->set_level(spdlog::level::info);
      logger->flush_on(spdlog::level::trace);
    }
    return made;
  }();
  return instance;
}

}  // namespace

void setup_logging(const LogConfig& config, spdlog::sink_ptr sink) {
  std::lock_guard lock(setup_mutex);
  auto& all = loggers();
  current_format = config.format;
  sink->set_formatter(std::make_unique<LineFormatter>(config.format));
  for (const auto& logger : {all.events, all.general}) {
    logger->sinks() = {sink};
    logger->set_level(to_spdlog(config.level));
  }
  spdlog::set_default_logger(all.general);
}

void setup_logging(const LogConfig& config) {
  setup_logging(config, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

void set_log_level(LogLevel level) {
  auto& all = loggers();
  all.events->set_level(to_spdlog(level));
  all.general->set_level(to_spdlog(level));
}

std::string format_event(LogFormat format, std::string_view event,
                         std::initializer_list<Field> fields) {
  if (format == LogFormat::json) {
    nlohmann::ordered_json object;
    object["event"] = std::string(event);
    for (const auto& field : fields) {
      object[std::string(field.key)] = json_value(field.value);
    }
    return dump_json(object);
  }
  std::string line = text_value(event);
  for (const auto& field : fields) {
    line += ' ';
    line += field.key;
    line += '=';
    line += text_value(field.value);
  }
  return line;
}

void log_event(spdlog::level::level_enum level, std::string_view event,
               std::initializer_list<Field> fields) {
  const auto& logger = loggers().events;
  if (!logger->should_log(level)) {
    return;
  }
  const std::string line = format_event(current_format.load(), event, fields);
  logger->log(level, spdlog::string_view_t(line.data(), line.size()));
}

}  // namespace stsrelay::relay
