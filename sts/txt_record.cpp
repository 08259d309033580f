#include "sts/txt_record.hpp"

#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "sts/quoted.hpp"

namespace stsrelay::sts {

namespace {

constexpr std::string_view version_tag = "v=STSv1";
constexpr std::size_t max_id_length = 32;
constexpr std::size_t max_ext_name_length = 32;
// Details quote what they complain about; a record is at most a few hundred
// bytes, but a hostile one need not be.
constexpr std::size_t max_quoted_length = 80;

bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alnum(char c) {
  return is_alpha(c) || is_digit(c);
}
bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

// sts-ext-value: printable ASCII except "=" and ";" (and SP, a delimiter here).
bool is_ext_value_char(char c) {
  return c >= '!' && c <= '~' && c != '=' && c != ';';
}

std::string quoted(std::string_view text) {
  return sts::quoted(text, max_quoted_length);
}

// "Begins with v=STSv1" as a whole token: the version may be followed only by
// the end of the record or a field delimiter.
bool is_sts_record(std::string_view record) {
  if (!record.starts_with(version_tag)) {
    return false;
  }
  if (record.size() == version_tag.size()) {
    return true;
  }
  const char next = record[version_tag.size()];
  return next == ';' || is_wsp(next);
}

bool is_ext_name(std::string_view name) {
  if (name.empty() || name.size() > max_ext_name_length || !is_alnum(name.front())) {
    return false;
  }
  for (const char c : name) {
    if (!is_alnum(c) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

bool is_ext_value(std::string_view value) {
  if (value.empty()) {
    return false;
  }
  for (const char c : value) {
    if (!is_ext_value_char(c)) {
      return false;
    }
  }
  return true;
}

bool is_id(std::string_view value) {
  if (value.empty() || value.size() > max_id_length) {
    return false;
  }
  for (const char c : value) {
    if (!is_alnum(c)) {
      return false;
    }
  }
  return true;
}

tl::unexpected<TxtProblem> problem(TxtError error, std::string detail) {
  return tl::unexpected(TxtProblem{error, std::move(detail)});
}

// sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
tl::expected<TxtRecord, TxtProblem> parse_record(std::string_view record) {
  std::optional<std::string> id;
  std::size_t pos = version_tag.size();
  const auto skip_wsp = [&] {
    while (pos < record.size() && is_wsp(record[pos])) {
      ++pos;
    }
  };
  while (true) {
    // sts-field-delim = *WSP ";" *WSP
    skip_wsp();
    if (pos == record.size()) {
      break;
    }
    if (record[pos] != ';') {
      return problem(TxtError::malformed, "expected \";\" before " + quoted(record.substr(pos)) +
                                              " in TXT record " + quoted(record));
    }
    ++pos;
    skip_wsp();
    if (pos == record.size()) {
      break;  // the optional trailing delimiter
    }
    // A field runs to the next delimiter; what follows it is checked above.
    const std::size_t start = pos;
    while (pos < record.size() && record[pos] != ';' && !is_wsp(record[pos])) {
      ++pos;
    }
    const std::string_view field = record.substr(start, pos - start);
    const std::size_t equals = field.find('=');
    if (equals == std::string_view::npos) {
      return problem(TxtError::malformed, "field " + quoted(field) +
                                              " is not key=value in TXT record " + quoted(record));
    }
    const std::string_view name = field.substr(0, equals);
    const std::string_view value = field.substr(equals + 1);
    if (name == "id" && !id) {
      if (!is_id(value)) {
        return problem(TxtError::invalid_id,
                       "id " + quoted(value) + " is not 1 to 32 letters and digits");
      }
      id.emplace(value);
      continue;
    }
    if (!is_ext_name(name)) {
      return problem(TxtError::malformed, "field name " + quoted(name) +
                                              " is not valid in TXT record " + quoted(record));
    }
    if (!is_ext_value(value)) {
      return problem(TxtError::malformed, "value of field " + quoted(name) +
                                              " is empty or has characters not allowed (\"=\", "
                                              "controls, non-ASCII) in TXT record " +
                                              quoted(record));
    }
  }
  if (!id) {
    return problem(TxtError::missing_id, "TXT record " + quoted(record) + " has no id field");
  }
  return TxtRecord{std::move(*id)};
}

}  // namespace

std::string_view to_string(TxtError error) {
  switch (error) {
    case TxtError::no_sts_record:
      return "no-sts-record";
    case TxtError::multiple_records:
      return "multiple-records";
    case TxtError::malformed:
      return "malformed";
    case TxtError::missing_id:
      return "missing-id";
    case TxtError::invalid_id:
      return "invalid-id";
  }
  return "unknown";
}

tl::expected<TxtRecord, TxtProblem> parse_sts_txt(std::span<const std::string> records) {
  std::vector<std::string_view> sts_records;
  for (const auto& record : records) {
    if (is_sts_record(record)) {
      sts_records.emplace_back(record);
    }
  }
  if (sts_records.empty()) {
    std::string detail = "no TXT record";
    if (records.size() == 1) {
      detail = "the TXT record " + quoted(records.front()) + " does not begin with \"v=STSv1\"";
    } else if (records.size() > 1) {
      detail = std::to_string(records.size()) + " TXT records, none beginning with \"v=STSv1\"";
    }
    return problem(TxtError::no_sts_record, std::move(detail));
  }
  if (sts_records.size() > 1) {
    std::string detail =
        std::to_string(sts_records.size()) + " TXT records begin with \"v=STSv1\":";
    for (const auto record : sts_records) {
      detail += ' ';
      detail += quoted(record);
    }
    return problem(TxtError::multiple_records, std::move(detail));
  }
  return parse_record(sts_records.front());
}

}  // namespace stsrelay::sts
