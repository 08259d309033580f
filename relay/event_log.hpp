#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <spdlog/common.h>

#include "relay/config.hpp"

namespace stsrelay::relay {

// Logging: spdlog on stderr, one line per event. In text format an event is
//   2026-12-04T17:40:33.123Z info queued queue_id=0ABC client=127.0.0.1 sender=<a@b.example>
// (values that are empty or hold spaces, quotes, '=', backslashes, control
// characters or invalid UTF-8 are double-quoted with C-style escapes: a value
// never splits a line);
// in JSON format it is one object per line:
//   {"time":"2026-12-04T17:40:33.123Z","level":"info","event":"queued","queue_id":"0ABC",...}
void setup_logging(const LogConfig& config);
// The same, into SINK instead of stderr (tests). Free text logged with
// spdlog::info() and friends gets the same timestamp and level, and in JSON
// format becomes {"time":...,"level":...,"message":"..."}.
void setup_logging(const LogConfig& config, spdlog::sink_ptr sink);
void set_log_level(LogLevel level);

using FieldValue =
    std::variant<std::string_view, std::int64_t, std::uint64_t, bool, std::vector<std::string>>;

struct Field {
  std::string_view key;
  FieldValue value;
};

// Renders the fields of one event for the configured format (exposed for tests).
std::string format_event(LogFormat format, std::string_view event,
                         std::initializer_list<Field> fields);

void log_event(spdlog::level::level_enum level, std::string_view event,
               std::initializer_list<Field> fields);

}  // namespace stsrelay::relay
