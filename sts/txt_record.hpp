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
// Short and stable: "no-sts-record", "multiple-records", "malformed",
// "missing-id", "invalid-id".
std::string_view to_string(TxtError error);

struct TxtProblem {
  TxtError error;
  std::string detail;  // for people: what exactly is wrong
};

// records: one string per TXT record (its strings already joined). Records
// that do not begin with "v=STSv1" are ignored, not errors.
//
// The ABNF of §3.1 is followed to the letter, with these readings:
// - A record is an STS record when it begins with "v=STSv1" (case-sensitive)
//   followed by the end, ";", a space or a tab: "v=STSv10" and " v=STSv1" are
//   other records, discarded.
// - Counting comes before syntax: two STS records are multiple_records even
//   when one of them is malformed.
// - Field names are case-sensitive: "ID=x" is an unknown extension, ignored.
// - The first field named "id" is the id and must be 1-32 ALPHA/DIGIT
//   (invalid_id otherwise, rather than taking it for an extension). Later
//   "id" fields are ignored like any other well-formed extension: the first
//   one wins, as a repeated policy field does (§3.2).
// - Every other field must be an sts-extension (name: ALPHA/DIGIT then up to
//   31 of ALPHA/DIGIT/"_"/"-"/"."; value: one or more of %x21-3A/%x3C/%x3E-7E),
//   else malformed.
// - "v=STSv1" alone, or with only extensions, is missing_id.
tl::expected<TxtRecord, TxtProblem> parse_sts_txt(std::span<const std::string> records);

}  // namespace stsrelay::sts
