#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <string>

namespace stsrelay::sts {

// The policy a session was made under, as an RFC 8460 report names it.
struct ReportedPolicy {
  std::string domain;  // policy-domain: the recipient domain
  std::string type;    // policy-type: "sts" or "no-policy-found"
  std::string id;      // the MTA-STS policy id; empty without a policy

  auto operator<=>(const ReportedPolicy&) const = default;
};

// One kind of failure of RFC 8460 §4.3.2's failure-details.
struct SessionFailure {
  std::string result_type;   // "certificate-expired", "sts-policy-fetch-error", ...
  std::string receiving_mx;  // receiving-mx-hostname; empty for policy failures
  std::string receiving_ip;  // receiving-ip; empty when no connection was made

  auto operator<=>(const SessionFailure&) const = default;
};

struct SessionTally {
  std::uint64_t successful = 0;
  std::map<SessionFailure, std::uint64_t> failures;

  std::uint64_t failed() const;
};

// Per policy, the TLS sessions that succeeded and those that failed, by
// failure: the summary and failure-details of an RFC 8460 report, kept by
// delivery so that reports can be made without touching it.
class TlsSessionCounts {
 public:
  void succeeded(const ReportedPolicy& policy);
  void failed(const ReportedPolicy& policy, const SessionFailure& failure);

  const std::map<ReportedPolicy, SessionTally>& tallies() const { return tallies_; }
  // The tallies of the period that ends here; the next starts empty.
  std::map<ReportedPolicy, SessionTally> take();

 private:
  std::map<ReportedPolicy, SessionTally> tallies_;
};

}  // namespace stsrelay::sts
