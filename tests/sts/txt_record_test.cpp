#include "sts/txt_record.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::sts {
namespace {

using namespace std::string_literals;

struct TxtCase {
  std::string name;
  std::vector<std::string> records;
  std::string id;  // when parsing succeeds
  TxtError error = TxtError::malformed;
};

TxtCase ok(std::string name, std::vector<std::string> records, std::string id) {
  return {std::move(name), std::move(records), std::move(id)};
}

TxtCase fails(std::string name, std::vector<std::string> records, TxtError error) {
  return {std::move(name), std::move(records), "", error};
}

class TxtTable : public ::testing::TestWithParam<TxtCase> {};

TEST_P(TxtTable, Parses) {
  const TxtCase& c = GetParam();
  const auto parsed = parse_sts_txt(c.records);
  if (!c.id.empty()) {
    ASSERT_TRUE(parsed) << to_string(parsed.error().error) << ": " << parsed.error().detail;
    EXPECT_EQ(parsed->id, c.id);
  } else {
    ASSERT_FALSE(parsed) << "parsed id " << parsed->id;
    EXPECT_EQ(to_string(parsed.error().error), to_string(c.error)) << parsed.error().detail;
    EXPECT_FALSE(parsed.error().detail.empty());
  }
}

const std::string id32(32, 'a');
const std::string id33(33, 'a');

INSTANTIATE_TEST_SUITE_P(
    Rfc8461Section3_1, TxtTable,
    ::testing::Values(
        // The shape of the examples in §3.1 and of real domains.
        ok("Minimal", {"v=STSv1; id=20160831085700Z"}, "20160831085700Z"),
        ok("NoSpaces", {"v=STSv1;id=20190429T010101"}, "20190429T010101"),
        ok("TrailingSemicolon", {"v=STSv1; id=abc;"}, "abc"),
        ok("TrailingSemicolonAndSpaces", {"v=STSv1; id=abc ; "}, "abc"),
        ok("SpacesAroundSemicolon", {"v=STSv1 ;  id=abc"}, "abc"),
        ok("TabsAroundSemicolon", {"v=STSv1\t;\tid=abc\t"}, "abc"),
        ok("MaximalId", {"v=STSv1; id=" + id32}, id32), ok("OneCharId", {"v=STSv1; id=7"}, "7"),
        ok("MixedCaseId", {"v=STSv1; id=AbC123"}, "AbC123"),
        ok("ExtensionAfterId", {"v=STSv1; id=abc; ext=value"}, "abc"),
        ok("ExtensionBeforeId", {"v=STSv1; x-ext.1_a=v!\"#$%&'()*+,-./:<>?@[\\]^`{|}~; id=abc"},
           "abc"),
        ok("UpperCaseIdKeyIsAnExtension", {"v=STSv1; ID=zzz; id=abc"}, "abc"),
        ok("VersionRepeatedAsExtension", {"v=STSv1; id=abc; v=STSv1"}, "abc"),
        // Duplicate id: the first wins, later ones are extensions.
        ok("DuplicateIdFirstWins", {"v=STSv1; id=first; id=second"}, "first"),
        ok("DuplicateIdLaterInvalidIgnored", {"v=STSv1; id=first; id=not-alnum"}, "first"),
        // Other TXT records beside the STS one are discarded.
        ok("SpfBeside", {"v=spf1 -all", "v=STSv1; id=abc"}, "abc"),
        ok("GarbageBeside", {"", "hello world", "v=STSv1; id=abc", "\x01\xff"}, "abc"),
        ok("OtherVersionBeside", {"v=STSv10; id=x", "v=STSv1; id=abc"}, "abc"),
        ok("LowerCaseVersionBeside", {"v=stsv1; id=x", "V=STSv1; id=y", "v=STSv1; id=abc"}, "abc"),
        ok("LeadingSpaceBeside", {" v=STSv1; id=x", "v=STSv1; id=abc"}, "abc"),
        // No STS record at all.
        fails("NoRecords", {}, TxtError::no_sts_record),
        fails("OnlySpf", {"v=spf1 -all"}, TxtError::no_sts_record),
        fails("EmptyRecord", {""}, TxtError::no_sts_record),
        fails("LowerCaseVersion", {"v=stsv1; id=abc"}, TxtError::no_sts_record),
        fails("UpperCaseV", {"V=STSv1; id=abc"}, TxtError::no_sts_record),
        fails("LeadingSpace", {" v=STSv1; id=abc"}, TxtError::no_sts_record),
        fails("VersionGluedToMore", {"v=STSv1x; id=abc"}, TxtError::no_sts_record),
        fails("OtherVersion", {"v=STSv2; id=abc"}, TxtError::no_sts_record),
        fails("SpaceInVersion", {"v = STSv1; id=abc"}, TxtError::no_sts_record),
        fails("CommaAfterVersion", {"v=STSv1, id=abc"}, TxtError::no_sts_record),
        // More than one: no policy (§3.1), even when one is broken.
        fails("TwoRecords", {"v=STSv1; id=a", "v=STSv1; id=b"}, TxtError::multiple_records),
        fails("TwoIdenticalRecords", {"v=STSv1; id=a", "v=STSv1; id=a"},
              TxtError::multiple_records),
        fails("TwoRecordsOneBroken", {"v=STSv1; id=a", "v=STSv1"}, TxtError::multiple_records),
        fails("TwoRecordsAmongOthers", {"x", "v=STSv1; id=a", "y", "v=STSv1;id=b"},
              TxtError::multiple_records),
        // id missing or invalid.
        fails("VersionOnly", {"v=STSv1"}, TxtError::missing_id),
        fails("VersionAndSemicolon", {"v=STSv1;"}, TxtError::missing_id),
        fails("VersionAndSpaces", {"v=STSv1  ; "}, TxtError::missing_id),
        fails("OnlyExtension", {"v=STSv1; ext=1"}, TxtError::missing_id),
        fails("OnlyUpperCaseId", {"v=STSv1; ID=abc"}, TxtError::missing_id),
        fails("EmptyId", {"v=STSv1; id="}, TxtError::invalid_id),
        fails("IdOf33", {"v=STSv1; id=" + id33}, TxtError::invalid_id),
        fails("IdWithHyphen", {"v=STSv1; id=2019-04-29"}, TxtError::invalid_id),
        fails("IdWithUnderscore", {"v=STSv1; id=a_b"}, TxtError::invalid_id),
        fails("IdWithDot", {"v=STSv1; id=1.2"}, TxtError::invalid_id),
        fails("IdNonAscii", {"v=STSv1; id=caf\xc3\xa9"}, TxtError::invalid_id),
        fails("IdWithEquals", {"v=STSv1; id=a=b"}, TxtError::invalid_id),
        fails("FirstIdInvalidSecondValid", {"v=STSv1; id=a-b; id=ab"}, TxtError::invalid_id),
        // Anything else off the grammar.
        fails("NoSemicolonAfterVersion", {"v=STSv1 id=abc"}, TxtError::malformed),
        fails("SpaceInsideId", {"v=STSv1; id=abc def"}, TxtError::malformed),
        fails("FieldsWithoutSemicolon", {"v=STSv1; id=abc ext=1"}, TxtError::malformed),
        fails("CommaSeparator", {"v=STSv1; ext=1, id=abc"}, TxtError::malformed),
        fails("DoubleSemicolon", {"v=STSv1;; id=abc"}, TxtError::malformed),
        fails("DoubleSemicolonAtEnd", {"v=STSv1; id=abc;;"}, TxtError::malformed),
        fails("SpaceBeforeEquals", {"v=STSv1; id =abc"}, TxtError::malformed),
        fails("SpaceAfterEquals", {"v=STSv1; id= abc"}, TxtError::invalid_id),
        fails("FieldWithoutEquals", {"v=STSv1; id=abc; flag"}, TxtError::malformed),
        fails("EmptyExtensionValue", {"v=STSv1; id=abc; ext="}, TxtError::malformed),
        fails("EmptyExtensionName", {"v=STSv1; id=abc; =1"}, TxtError::malformed),
        fails("ExtensionNameBeginsWithHyphen", {"v=STSv1; id=abc; -ext=1"}, TxtError::malformed),
        fails("ExtensionNameTooLong", {"v=STSv1; id=abc; " + id33 + "=1"}, TxtError::malformed),
        fails("ExtensionValueWithEquals", {"v=STSv1; id=abc; ext=a=b"}, TxtError::malformed),
        fails("ExtensionValueWithControl", {"v=STSv1; id=abc; ext=a\x01"}, TxtError::malformed),
        fails("ExtensionValueNonAscii", {"v=STSv1; id=abc; ext=\xc3\xa9"}, TxtError::malformed),
        fails("ExtensionValueWithDel", {"v=STSv1; id=abc; ext=\x7f"}, TxtError::malformed),
        fails("NewlineAsSeparator", {"v=STSv1;\nid=abc"}, TxtError::malformed),
        fails("MalformedBeforeId", {"v=STSv1; bad; id=abc"}, TxtError::malformed)),
    [](const auto& info) { return info.param.name; });

TEST(TxtRecord, MultipleRecordsDetailQuotesThem) {
  const std::vector<std::string> records{"v=STSv1; id=one", "v=STSv1; id=two"};
  const auto parsed = parse_sts_txt(records);
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().detail.find("id=one"), std::string::npos);
  EXPECT_NE(parsed.error().detail.find("id=two"), std::string::npos);
}

TEST(TxtRecord, DetailEscapesUnprintableBytes) {
  const std::vector<std::string> records{"v=STSv1; id=abc; x=\x01\x02\x00"s};
  const auto parsed = parse_sts_txt(records);
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().detail.find("\\x01"), std::string::npos) << parsed.error().detail;
}

TEST(TxtRecord, ErrorNamesAreStable) {
  EXPECT_EQ(to_string(TxtError::no_sts_record), "no-sts-record");
  EXPECT_EQ(to_string(TxtError::multiple_records), "multiple-records");
  EXPECT_EQ(to_string(TxtError::malformed), "malformed");
  EXPECT_EQ(to_string(TxtError::missing_id), "missing-id");
  EXPECT_EQ(to_string(TxtError::invalid_id), "invalid-id");
}

}  // namespace
}  // namespace stsrelay::sts
