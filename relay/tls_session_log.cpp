#include "relay/tls_session_log.hpp"

#include "relay/event_log.hpp"

namespace stsrelay::relay {

std::vector<std::string> describe_failures(const sts::SessionTally& tally) {
  std::vector<std::string> described;
  for (const auto& [failure, count] : tally.failures) {
    std::string item = failure.result_type;
    if (!failure.receiving_mx.empty()) {
      item += ":" + failure.receiving_mx;
      if (!failure.receiving_ip.empty()) {
        item += "[" + failure.receiving_ip + "]";
      }
    }
    item += "=" + std::to_string(count);
    described.push_back(std::move(item));
  }
  return described;
}

void log_tls_sessions(const std::map<sts::ReportedPolicy, sts::SessionTally>& tallies) {
  for (const auto& [policy, tally] : tallies) {
    log_event(spdlog::level::info, "tls_sessions",
              {{"policy_domain", std::string_view(policy.domain)},
               {"policy_type", std::string_view(policy.type)},
               {"policy_id", std::string_view(policy.id)},
               {"successful", tally.successful},
               {"failed", tally.failed()},
               {"failures", describe_failures(tally)}});
  }
}

std::chrono::system_clock::time_point end_of_utc_day(std::chrono::system_clock::time_point now) {
  // system_clock counts UTC without leap seconds: days are whole multiples.
  return std::chrono::floor<std::chrono::days>(now) + std::chrono::days(1);
}

}  // namespace stsrelay::relay
