#include "sts/tls_session_counts.hpp"

#include <utility>

namespace stsrelay::sts {

std::uint64_t SessionTally::failed() const {
  std::uint64_t total = 0;
  for (const auto& [failure, count] : failures) {
    total += count;
  }
  return total;
}

void TlsSessionCounts::succeeded(const ReportedPolicy& policy) {
  ++tallies_[policy].successful;
}

void TlsSessionCounts::failed(const ReportedPolicy& policy, const SessionFailure& failure) {
  ++tallies_[policy].failures[failure];
}

std::map<ReportedPolicy, SessionTally> TlsSessionCounts::take() {
  return std::exchange(tallies_, {});
}

}  // namespace stsrelay::sts
