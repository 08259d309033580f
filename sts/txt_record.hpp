#pragma once

#include <span>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace stsrelay::sts {

// The _mta-sts.DOMAIN TXT record (RFC 8461 §3.1).
struct TxtRecord {
  std::string id;  // 1-32 alphanumerics
};

enum class TxtError {
  no_sts_record,     // no record begins with "v=STSv1"
  multiple_records,  // more than one does (§3.1: then there is no policy)
  malformed,         // a field that is not "key=value", bad separators
  missing_id,
  invalid_id,  // not 1-32 alphanumerics
};
std::string_view to_string(TxtError error);

struct TxtProblem {
  TxtError error;
  std::string detail;  // for people: what exactly is wrong
};

// records: one string per TXT record (its strings already joined). Records
// that do not begin with "v=STSv1" are ignored, not errors.
tl::expected<TxtRecord, TxtProblem> parse_sts_txt(std::span<const std::string> records);

}  // namespace stsrelay::sts
