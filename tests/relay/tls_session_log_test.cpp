#include "relay/tls_session_log.hpp"

#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "relay/event_log.hpp"

namespace stsrelay::relay {
namespace {

using namespace std::chrono_literals;

TEST(TlsSessionLog, DescribesEachFailureKindWithItsCount) {
  sts::SessionTally tally;
  tally.failures[{"certificate-expired", "mx2.example.org", "192.0.2.7"}] = 2;
  tally.failures[{"validation-failure", "rogue.example.org", ""}] = 1;
  tally.failures[{"sts-policy-fetch-error", "", ""}] = 3;
  EXPECT_EQ(describe_failures(tally),
            (std::vector<std::string>{"certificate-expired:mx2.example.org[192.0.2.7]=2",
                                      "sts-policy-fetch-error=3",
                                      "validation-failure:rogue.example.org=1"}));
}

TEST(TlsSessionLog, OneEventPerPolicy) {
  std::ostringstream out;
  setup_logging(LogConfig{}, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  std::map<sts::ReportedPolicy, sts::SessionTally> tallies;
  tallies[{"example.org", "sts", "20261204"}].successful = 41;
  tallies[{"example.org", "sts", "20261204"}]
      .failures[{"certificate-expired", "mx2.example.org", "192.0.2.7"}] = 2;
  tallies[{"example.net", "no-policy-found", ""}].successful = 5;
  log_tls_sessions(tallies);
  setup_logging(LogConfig{});

  const std::string logged = out.str();
  EXPECT_NE(logged.find("info tls_sessions policy_domain=example.net policy_type=no-policy-found "
                        "policy_id=\"\" successful=5 failed=0 failures=\"\"\n"),
            std::string::npos)
      << logged;
  EXPECT_NE(logged.find("info tls_sessions policy_domain=example.org policy_type=sts "
                        "policy_id=20261204 successful=41 failed=2 "
                        "failures=\"certificate-expired:mx2.example.org[192.0.2.7]=2\"\n"),
            std::string::npos)
      << logged;
}

TEST(TlsSessionLog, ReportPeriodsEndAtUtcMidnight) {
  using std::chrono::sys_days;
  using namespace std::chrono;
  const auto day = sys_days{2026y / December / 4};
  EXPECT_EQ(end_of_utc_day(day), day + days(1));
  EXPECT_EQ(end_of_utc_day(day + 13h + 7min + 1s), day + days(1));
  EXPECT_EQ(end_of_utc_day(day + days(1) - 1ms), day + days(1));
  EXPECT_EQ(end_of_utc_day(sys_days{2026y / December / 31} + 23h), sys_days{2027y / January / 1});
}

}  // namespace
}  // namespace stsrelay::relay
