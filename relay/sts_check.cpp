#include "relay/sts_check.hpp"

#include <sstream>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "relay/outbound_clients.hpp"
#include "smtp/starttls_probe.hpp"
#include "sts/mx_pattern.hpp"
#include "sts/policy_engine.hpp"
#include "sts/txt_record.hpp"
#include "tls/client_context.hpp"

namespace stsrelay::relay {

namespace {

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string joined;
  for (const auto& item : items) {
    if (!joined.empty()) {
      joined += separator;
    }
    joined += item;
  }
  return joined;
}

// "NAME does not exist (NXDOMAIN)": what a lookup's status means, for people.
std::string dns_failure(const std::string& name, std::string_view type, dns::Status status) {
  switch (status) {
    case dns::Status::ok:
      break;
    case dns::Status::no_data:
      return name + " has no " + std::string(type) + " records";
    case dns::Status::no_such_name:
      return name + " does not exist (NXDOMAIN)";
    case dns::Status::server_failure:
      return "the DNS server failed to answer the " + std::string(type) + " query for " + name +
             " (SERVFAIL or refused)";
    case dns::Status::timeout:
      return "the " + std::string(type) + " query for " + name + " timed out";
    case dns::Status::cancelled:
      return "the " + std::string(type) + " query for " + name + " was cancelled";
  }
  return "the " + std::string(type) + " query for " + name + " failed";
}

asio::awaitable<void> check_txt(StsCheckReport& report, dns::Resolver& resolver) {
  const std::string name = "_mta-sts." + report.domain;
  auto answer = co_await resolver.txt(name);
  if (answer.status == dns::Status::no_data || answer.status == dns::Status::no_such_name) {
    report.txt.error = "no TXT record at " + name;
    co_return;
  }
  if (answer.status != dns::Status::ok) {
    report.txt.error = dns_failure(name, "TXT", answer.status);
    co_return;
  }
  auto record = sts::parse_sts_txt(answer.records);
  if (!record) {
    report.txt.found = record.error().error != sts::TxtError::no_sts_record;
    report.txt.error = "TXT record at " + name + ": " + record.error().detail;
    co_return;
  }
  report.txt.found = true;
  report.txt.id = record->id;
}

asio::awaitable<void> check_policy(StsCheckReport& report, sts::PolicyFetcher& fetcher) {
  auto body = co_await fetcher.fetch(report.domain);
  if (!body) {
    report.policy.error = body.error().detail;
    co_return;
  }
  report.policy.fetched = true;
  auto policy = sts::parse_policy(*body);
  if (!policy) {
    report.policy.error =
        "policy is invalid (" + policy.error().rule + "): " + policy.error().detail;
    co_return;
  }
  report.policy.policy = std::move(*policy);
}

asio::awaitable<void> check_mx(StsCheckReport& report, const StsCheckTools& tools, bool connect) {
  auto answer = co_await tools.resolver.mx(report.domain);
  if (answer.null_mx) {
    report.mx_error = report.domain + " publishes a null MX (RFC 7505): it accepts no mail";
    co_return;
  }
  if (answer.status == dns::Status::no_data) {
    StsCheckReport::MxHost host;
    host.name = report.domain;
    host.implicit = true;
    report.mx_hosts.push_back(std::move(host));
  } else if (answer.status != dns::Status::ok) {
    report.mx_error = dns_failure(report.domain, "MX", answer.status);
    co_return;
  } else {
    for (const auto& found : answer.hosts) {
      StsCheckReport::MxHost host;
      host.name = found.name;
      host.preference = found.preference;
      report.mx_hosts.push_back(std::move(host));
    }
  }
  for (auto& host : report.mx_hosts) {
    if (report.policy.policy) {
      host.matches_policy = sts::policy_lists_mx(*report.policy.policy, host.name);
    }
    if (!connect) {
      continue;
    }
    auto addresses = co_await tools.resolver.addresses(host.name);
    if (addresses.status != dns::Status::ok) {
      host.error =
          "cannot resolve " + host.name + ": " + dns_failure(host.name, "A/AAAA", addresses.status);
      continue;
    }
    auto probe =
        co_await smtp::probe_starttls(host.name, addresses.addresses, tools.smtp_port,
                                      tools.tls_context, tools.helo_name, tools.smtp_timeout);
    if (probe.connected) {
      host.starttls = probe.starttls_offered;
    }
    if (probe.tls_established) {
      host.tls_version = probe.tls_version;
      host.certificate_valid = probe.certificate.verdict == tls::CertificateVerdict::valid;
    }
    if (!probe.error.empty()) {
      host.error = probe.error;
    }
  }
}

nlohmann::json optional_json(const std::optional<std::string>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json optional_json(const std::optional<bool>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

asio::awaitable<StsCheckReport> check_domain(std::string domain, StsCheckTools tools,
                                             bool connect) {
  StsCheckReport report;
  report.domain = sts::normalize_domain(domain);
  co_await check_txt(report, tools.resolver);
  // The policy is fetched even without a TXT record: a domain owner setting
  // things up wants to know about both halves.
  co_await check_policy(report, tools.fetcher);
  co_await check_mx(report, tools, connect);
  judge(report, connect);
  co_return report;
}

void judge(StsCheckReport& report, bool connected) {
  report.problems.clear();
  if (report.txt.error) {
    report.problems.push_back(*report.txt.error);
  }
  if (report.policy.error) {
    report.problems.push_back(*report.policy.error);
  }
  if (report.mx_error) {
    report.problems.push_back(*report.mx_error);
  }
  const bool checks_hosts = report.policy.policy && report.policy.policy->mode != sts::Mode::none;
  if (checks_hosts) {
    for (const auto& host : report.mx_hosts) {
      if (!host.matches_policy) {
        report.problems.push_back(host.name + (host.implicit ? " (implicit MX)" : "") +
                                  " does not match any mx pattern of the policy (" +
                                  join(report.policy.policy->mx, ", ") + ")");
      }
      if (connected && host.error) {
        // Most probe errors name the host already ("certificate for mx1... expired").
        const bool names_host = host.error->find(host.name) != std::string::npos;
        report.problems.push_back(names_host ? *host.error : host.name + ": " + *host.error);
      } else if (connected && host.certificate_valid != true) {
        report.problems.push_back(host.name + ": no validated TLS");
      }
    }
  }
  report.valid = report.problems.empty() && report.txt.id && report.policy.policy;
}

std::string render_text(const StsCheckReport& report) {
  std::ostringstream out;
  out << "MTA-STS check for " << report.domain << "\n";
  out << "  TXT _mta-sts." << report.domain << ": ";
  if (report.txt.id) {
    out << "ok, id " << *report.txt.id << "\n";
  } else {
    out << report.txt.error.value_or("missing") << "\n";
  }
  out << "  policy https://mta-sts." << report.domain << "/.well-known/mta-sts.txt: ";
  if (report.policy.policy) {
    const auto& policy = *report.policy.policy;
    out << "mode " << sts::to_string(policy.mode) << ", max_age " << policy.max_age.count()
        << ", mx " << (policy.mx.empty() ? "(none)" : join(policy.mx, ", ")) << "\n";
  } else {
    out << report.policy.error.value_or("not fetched") << "\n";
  }
  if (report.mx_error) {
    out << "  MX: " << *report.mx_error << "\n";
  }
  for (const auto& host : report.mx_hosts) {
    out << "  MX " << host.preference << " " << host.name << (host.implicit ? " (implicit)" : "")
        << ": "
        << (report.policy.policy ? (host.matches_policy ? "listed" : "NOT listed") : "no policy");
    if (host.starttls.has_value()) {
      out << ", " << (*host.starttls ? "STARTTLS" : "no STARTTLS");
    }
    if (host.tls_version) {
      out << " " << *host.tls_version;
    }
    if (host.certificate_valid.has_value()) {
      out << ", certificate " << (*host.certificate_valid ? "valid" : "INVALID");
    }
    if (host.error) {
      out << " (" << *host.error << ")";
    }
    out << "\n";
  }
  if (report.valid) {
    out << "valid: senders that enforce MTA-STS will deliver to " << report.domain << "\n";
  } else {
    out << "NOT valid:\n";
    for (const auto& problem : report.problems) {
      out << "  - " << problem << "\n";
    }
    if (report.problems.empty()) {
      out << "  - no MTA-STS policy is published\n";
    }
  }
  return out.str();
}

std::string render_json(const StsCheckReport& report) {
  nlohmann::json policy = {{"fetched", report.policy.fetched},
                           {"mode", nullptr},
                           {"max_age", nullptr},
                           {"mx", nlohmann::json::array()},
                           {"error", optional_json(report.policy.error)}};
  if (report.policy.policy) {
    policy["mode"] = std::string(sts::to_string(report.policy.policy->mode));
    policy["max_age"] = report.policy.policy->max_age.count();
    policy["mx"] = report.policy.policy->mx;
  }
  nlohmann::json hosts = nlohmann::json::array();
  for (const auto& host : report.mx_hosts) {
    hosts.push_back({{"name", host.name},
                     {"preference", host.preference},
                     {"implicit", host.implicit},
                     {"matches_policy", host.matches_policy},
                     {"starttls", optional_json(host.starttls)},
                     {"tls_version", optional_json(host.tls_version)},
                     {"certificate_valid", optional_json(host.certificate_valid)},
                     {"error", optional_json(host.error)}});
  }
  nlohmann::json document = {{"domain", report.domain},
                             {"txt",
                              {{"found", report.txt.found},
                               {"id", optional_json(report.txt.id)},
                               {"error", optional_json(report.txt.error)}}},
                             {"policy", policy},
                             {"mx_hosts", hosts},
                             {"mx_error", optional_json(report.mx_error)},
                             {"valid", report.valid},
                             {"problems", report.problems}};
  return document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

int sts_check(const Config& config, std::string_view domain, bool json, bool connect,
              std::ostream& out, std::ostream& err) {
  asio::io_context io(1);
  auto outbound = make_outbound_clients(io.get_executor(), config);
  if (!outbound) {
    err << "stsrelay: sts-check: " << outbound.error().stage << ": " << outbound.error().message
        << "\n";
    return outbound.error().exit_status;
  }

  StsCheckTools tools{*outbound->resolver, *outbound->fetcher, outbound->tls_context,
                      config.delivery.port, config.effective_helo_name(),
                      // A check is interactive: the whole SMTP probe of one
                      // host gets the connect timeout, not a delivery's patience.
                      config.delivery.connect_timeout};
  std::optional<StsCheckReport> report;
  std::exception_ptr failure;
  asio::co_spawn(io, check_domain(std::string(domain), tools, connect),
                 [&](std::exception_ptr error, StsCheckReport result) {
                   failure = error;
                   report = std::move(result);
                 });
  io.run();
  if (failure) {
    std::rethrow_exception(failure);
  }
  out << (json ? render_json(*report) : render_text(*report));
  return report->valid ? 0 : 1;
}

}  // namespace stsrelay::relay
