#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "sts/tls_session_counts.hpp"

namespace stsrelay::relay {

// The daily summary of outbound TLS sessions: one `tls_sessions` event per
// policy with the counts an RFC 8460 report would carry, e.g.
//   tls_sessions policy_domain=example.org policy_type=sts policy_id=2026 successful=41
//   failed=2 failures="certificate-expired:mx2.example.org[192.0.2.7]=2"
void log_tls_sessions(const std::map<sts::ReportedPolicy, sts::SessionTally>& tallies);

// "certificate-expired:mx2.example.org[192.0.2.7]=2", one per failure kind.
std::vector<std::string> describe_failures(const sts::SessionTally& tally);

// RFC 8460 report periods are UTC days: when the current one ends.
std::chrono::system_clock::time_point end_of_utc_day(std::chrono::system_clock::time_point now);

}  // namespace stsrelay::relay
