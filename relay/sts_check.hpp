#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ssl/context.hpp>

#include "dns/resolver.hpp"
#include "relay/config.hpp"
#include "sts/policy.hpp"
#include "sts/policy_fetcher.hpp"

namespace stsrelay::relay {

// What `stsrelay sts-check DOMAIN` found, in the shape of SPEC's JSON.
struct StsCheckReport {
  struct Txt {
    bool found = false;  // a v=STSv1 record exists
    std::optional<std::string> id;
    std::optional<std::string> error;
  };
  struct PolicyFinding {
    bool fetched = false;
    std::optional<sts::Policy> policy;  // when fetched and valid
    std::optional<std::string> error;
  };
  struct MxHost {
    std::string name;
    std::uint16_t preference = 0;
    bool implicit = false;  // no MX records: the domain itself (RFC 5321 §5.1)
    bool matches_policy = false;
    std::optional<bool> starttls;  // unknown with --no-connect
    std::optional<std::string> tls_version;
    std::optional<bool> certificate_valid;
    std::optional<std::string> error;
  };

  std::string domain;
  Txt txt;
  PolicyFinding policy;
  std::vector<MxHost> mx_hosts;
  std::optional<std::string> mx_error;  // the MX lookup itself failed
  bool valid = false;
  std::vector<std::string> problems;  // each plainly, for people
};

// The network pieces a check uses.
struct StsCheckTools {
  dns::Resolver& resolver;
  sts::PolicyFetcher& fetcher;
  std::shared_ptr<asio::ssl::context> tls_context;
  std::uint16_t smtp_port = 25;
  std::string helo_name;
  std::chrono::milliseconds smtp_timeout{30000};
};

// Discovery as delivery does it, then (with connect) STARTTLS on every MX.
asio::awaitable<StsCheckReport> check_domain(std::string domain, StsCheckTools tools, bool connect);

// Fills in valid and problems from the findings: valid when the TXT record
// and the policy are, and, in enforce or testing mode, every MX host matches
// the policy and (when probed) offers STARTTLS with a certificate valid for
// its name.
void judge(StsCheckReport& report, bool connected);

std::string render_text(const StsCheckReport& report);
std::string render_json(const StsCheckReport& report);

// `stsrelay sts-check`: exit 0 when the domain's setup is valid, 1 when not.
int sts_check(const Config& config, std::string_view domain, bool json, bool connect,
              std::ostream& out, std::ostream& err);

}  // namespace stsrelay::relay
