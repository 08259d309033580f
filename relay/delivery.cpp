#include "relay/delivery.hpp"

#include <algorithm>
#include <cctype>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include "relay/dsn.hpp"
#include "relay/event_log.hpp"
#include "relay/queue_sink.hpp"
#include "sts/mx_pattern.hpp"

namespace stsrelay::relay {

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

std::string domain_of(std::string_view address) {
  auto at = address.rfind('@');
  std::string domain(at == std::string_view::npos ? std::string_view() : address.substr(at + 1));
  return sts::normalize_domain(domain);
}

// What one attempt learnt on its way, for its log line.
struct AttemptTrace {
  std::string mx;
  std::string ip;
  std::string tls_version;
  std::string tls_cipher;
  bool tls_resumed = false;           // an abbreviated handshake on a cached TLS session
  std::string verification = "none";  // "valid", an RFC 8460 result type, or "none" (no TLS)
  std::string policy_mode = "none";
  std::string policy_id;

  // The log line describes the last host tried, nothing of an earlier one.
  void trying(std::string host, std::string address) {
    mx = std::move(host);
    ip = std::move(address);
    tls_version.clear();
    tls_cipher.clear();
    tls_resumed = false;
    verification = "none";
  }
};

smtp::DeliveryStatus dns_status(smtp::Disposition disposition, std::string enhanced,
                                std::string text) {
  smtp::DeliveryStatus status;
  status.disposition = disposition;
  status.stage = smtp::Stage::dns;
  status.enhanced = std::move(enhanced);
  status.text = std::move(text);
  return status;
}

sts::ReportedPolicy reported_policy(const std::string& domain,
                                    const std::optional<sts::CachedPolicy>& policy) {
  return {domain, policy ? "sts" : "no-policy-found", policy ? policy->id : ""};
}

// A new connection's TLS session, for reports. Under a policy that asks for
// validation (enforce, testing) it succeeded when the certificate validated;
// otherwise when TLS was used at all. A host the policy does not list was
// counted as such already.
void count_new_session(sts::TlsSessionCounts& counts, const smtp::SmtpConnection& connection,
                       sts::Mode mode, bool listed, const sts::ReportedPolicy& policy) {
  if (!listed) {
    return;
  }
  const auto& tls = connection.tls();
  std::string_view result = "valid";
  if (!tls.used) {
    result = tls.failure.empty() ? "starttls-not-supported" : "validation-failure";
  } else if (mode != sts::Mode::none) {
    result = tls::rfc8460_result_type(tls.certificate.verdict);
  }
  if (result == "valid") {
    counts.succeeded(policy);
  } else {
    counts.failed(policy,
                  {std::string(result), connection.host(), connection.address().to_string()});
  }
}

}  // namespace

DeliveryEngine::DeliveryEngine(asio::any_io_executor executor, DeliverySettings settings,
                               queue::Store& reader, queue::GroupCommitWriter& writer,
                               queue::QueueIdGenerator& ids, dns::Resolver& resolver,
                               sts::PolicyEngine* policies, Clock clock)
    : executor_(executor),
      settings_(std::move(settings)),
      reader_(reader),
      writer_(writer),
      ids_(ids),
      resolver_(resolver),
      policies_(policies),
      clock_(std::move(clock)),
      wakeup_(executor),
      pace_(executor),
      idle_(executor),
      connections_(executor, settings_.connection_cache),
      random_(std::random_device{}()) {
  idle_.expires_at(asio::steady_timer::time_point::max());
}

void DeliveryEngine::start() {
  scheduling_ = true;
  asio::co_spawn(executor_, schedule(), [this](std::exception_ptr failure) {
    scheduling_ = false;
    idle_.cancel();
    if (failure) {
      std::rethrow_exception(failure);  // the scheduler dying silently would strand mail
    }
  });
}

void DeliveryEngine::wake() {
  wakeup_.cancel();
}

tl::expected<std::size_t, std::string> DeliveryEngine::flush() {
  auto made_due = reader_.make_due(clock_());
  wake();
  if (!made_due) {
    return tl::unexpected(made_due.error());
  }
  return *made_due;
}

asio::awaitable<void> DeliveryEngine::stop() {
  stopping_ = true;
  wake();
  // The scheduler too must have seen it: it may be between two passes,
  // and must not resume after the engine is gone.
  pace_.cancel();
  while (!in_flight_.empty() || scheduling_) {
    co_await idle_.async_wait(use_tuple);
  }
  co_await connections_.close();
}

asio::awaitable<void> DeliveryEngine::schedule() {
  while (!stopping_) {
    if (in_flight_.size() < settings_.max_connections) {
      start_due();
    }
    wakeup_.expires_after(settings_.poll_interval);
    co_await wakeup_.async_wait(use_tuple);
    // A client streaming mail wakes the engine once per message: one pass
    // per interval serves them all, and keeps the queue reads off the
    // accepting sessions' backs.
    if (stopping_) {
      break;
    }
    pace_.expires_after(settings_.min_scan_interval);
    co_await pace_.async_wait(use_tuple);
  }
}

void DeliveryEngine::start_due() {
  const auto now = clock_();
  auto due = reader_.due_recipients(now, settings_.batch_limit);
  if (!due) {
    log_event(spdlog::level::err, "queue_read_failed", {{"error", std::string_view(due.error())}});
    return;
  }
  // One attempt per (message, domain): its recipients share MX hosts and a
  // policy, and go in one transaction.
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (auto& recipient : *due) {
    std::string domain = domain_of(recipient.address);
    auto key = std::pair{recipient.message_id, domain};
    auto& group = groups[key];
    group.message_id = recipient.message_id;
    group.domain = domain;
    group.recipients.push_back(std::move(recipient));
  }
  // What this pass cannot start for want of a connection slot waits, per
  // domain, for an attempt to end: a busy domain then keeps its connections
  // (and the idle ones kept for it) busy without waiting for the next pass.
  // Each pass replaces the list, so nothing on it was attempted since it
  // was read.
  waiting_.clear();
  for (auto& [key, group] : groups) {
    if (stopping_) {
      return;
    }
    if (in_flight_.contains(key)) {
      continue;
    }
    if (!has_slot(group.domain)) {
      waiting_[group.domain].push_back(std::move(group));
      continue;
    }
    launch(std::move(group));
  }
}

bool DeliveryEngine::has_slot(const std::string& domain) const {
  if (in_flight_.size() >= settings_.max_connections) {
    return false;
  }
  auto used = per_domain_.find(domain);
  return used == per_domain_.end() || used->second < settings_.max_connections_per_domain;
}

void DeliveryEngine::launch(Group group) {
  auto key = std::pair{group.message_id, group.domain};
  in_flight_.insert(key);
  ++per_domain_[group.domain];
  asio::co_spawn(executor_, attempt(std::move(group)), [this, key](std::exception_ptr failure) {
    in_flight_.erase(key);
    if (--per_domain_[key.second] == 0) {
      per_domain_.erase(key.second);
    }
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& error) {
        log_event(spdlog::level::err, "internal_error",
                  {{"queue_id", std::string_view(key.first)}, {"error", error.what()}});
      }
    }
    start_waiting(key.second);
    idle_.cancel();
    wake();
  });
}

void DeliveryEngine::start_waiting(const std::string& freed_domain) {
  // The domain whose attempt ended first: its next message can often take
  // the connection just parked.
  auto start_from = [this](std::map<std::string, std::deque<Group>>::iterator waiting) {
    while (!stopping_ && !waiting->second.empty() && has_slot(waiting->first)) {
      Group group = std::move(waiting->second.front());
      waiting->second.pop_front();
      if (!in_flight_.contains({group.message_id, group.domain})) {
        launch(std::move(group));
      }
    }
    return waiting->second.empty() ? waiting_.erase(waiting) : std::next(waiting);
  };
  if (auto freed = waiting_.find(freed_domain); freed != waiting_.end()) {
    start_from(freed);
  }
  for (auto waiting = waiting_.begin();
       waiting != waiting_.end() && in_flight_.size() < settings_.max_connections;) {
    waiting = start_from(waiting);
  }
}

asio::awaitable<void> DeliveryEngine::attempt(Group group) {
  co_await attempt_group(group);
}

asio::awaitable<void> DeliveryEngine::attempt_group(Group& group) {
  auto content = reader_.content(group.message_id);
  if (content && !*content) {
    co_return;  // deleted meanwhile (`queue delete`)
  }
  if (!content) {
    // Recorded as a failed attempt, so that the recipients wait for their
    // next retry instead of being picked again at once, over and over.
    log_event(spdlog::level::err, "queue_read_failed",
              {{"queue_id", std::string_view(group.message_id)},
               {"error", std::string_view(content.error())}});
    smtp::DeliveryStatus unreadable = smtp::classify_local_failure(
        smtp::Stage::connect, "the queued message cannot be read: " + content.error(), "");
    unreadable.disposition = smtp::Disposition::defer;
    unreadable.enhanced = "4.3.0";
    co_await record(group, std::vector<smtp::DeliveryStatus>(group.recipients.size(), unreadable),
                    "");
    co_return;
  }
  const auto& first = group.recipients.front();
  smtp::Envelope envelope;
  envelope.sender = first.sender;
  envelope.size = first.size;
  envelope.eight_bit_mime = first.eight_bit_mime;
  envelope.smtputf8 = first.smtputf8;
  for (const auto& recipient : group.recipients) {
    envelope.recipients.push_back(recipient.address);
  }

  AttemptTrace trace;
  auto fail_all = [&](smtp::DeliveryStatus status) {
    return std::vector<smtp::DeliveryStatus>(group.recipients.size(), status);
  };
  std::vector<smtp::DeliveryStatus> outcome;
  // The connection that carried the transaction: parked (or QUIT) only once
  // the outcome is committed, so that a slow QUIT does not widen the window
  // in which a crash leads to a second delivery.
  std::unique_ptr<smtp::SmtpConnection> used;
  auto used_requirement = smtp::TlsRequirement::opportunistic;

  // Where to: the MX hosts, or the domain itself (RFC 5321 §5.1).
  auto mx = co_await resolver_.mx(group.domain);
  if (mx.status == dns::Status::cancelled) {
    co_return;  // shutting down: not an attempt
  }
  std::vector<dns::MxHost> hosts;
  if (mx.null_mx) {
    outcome = fail_all(dns_status(smtp::Disposition::bounce, "5.1.10",
                                  group.domain + " accepts no mail (null MX, RFC 7505)"));
  } else if (mx.status == dns::Status::no_such_name) {
    outcome = fail_all(dns_status(smtp::Disposition::bounce, "5.1.2",
                                  "domain " + group.domain + " does not exist"));
  } else if (mx.status == dns::Status::no_data) {
    hosts.push_back({group.domain, 0});
  } else if (mx.status != dns::Status::ok) {
    outcome = fail_all(dns_status(
        smtp::Disposition::defer, "4.4.3",
        "MX lookup for " + group.domain + " failed: " + std::string(dns::to_string(mx.status))));
  } else {
    hosts = mx.hosts;
  }

  // What the domain demands (RFC 8461 §5).
  std::optional<sts::CachedPolicy> policy;
  if (!hosts.empty() && policies_ != nullptr) {
    auto discovery = co_await policies_->lookup(group.domain);
    note_discovery(group.domain, discovery);
    policy = discovery.policy;
  }

  smtp::DeliveryStatus last = dns_status(smtp::Disposition::defer, "4.4.1",
                                         "no MX host of " + group.domain + " could be reached");
  sts::Mode mode = sts::Mode::none;
  // Whether an MX host was refused because of the enforced policy (not
  // listed, no STARTTLS, TLS or certificate not good enough).
  bool refused_by_policy = false;
  // The hosts are tried once with the policy in force and, when that policy
  // refused them all and the recipients would now bounce, once more with a
  // re-discovered policy.
  for (bool rediscovered = false;;) {
    mode = policy ? policy->policy.mode : sts::Mode::none;
    trace.policy_mode = policy ? std::string(sts::to_string(mode)) : std::string("none");
    trace.policy_id = policy ? policy->id : std::string();
    const auto requirement = mode == sts::Mode::enforce ? smtp::TlsRequirement::validated
                                                        : smtp::TlsRequirement::opportunistic;
    for (const auto& host : hosts) {
      if (!outcome.empty()) {
        break;
      }
      // Under a policy every new TLS session is counted for reports: one
      // failure for a host the policy does not list, else the session's result.
      const bool listed =
          mode == sts::Mode::none || sts::policy_lists_mx(policy->policy, host.name);
      if (!listed) {
        tls_sessions_.failed(reported_policy(group.domain, policy),
                             {"validation-failure", host.name, ""});
        log_event(mode == sts::Mode::enforce ? spdlog::level::info : spdlog::level::warn,
                  "sts_mx_not_listed",
                  {{"queue_id", std::string_view(group.message_id)},
                   {"domain", std::string_view(group.domain)},
                   {"mx", std::string_view(host.name)},
                   {"policy_mode", std::string_view(trace.policy_mode)},
                   {"action", std::string_view(mode == sts::Mode::enforce ? "skipped" : "tried")}});
        if (mode == sts::Mode::enforce) {
          trace.trying(host.name, "");
          trace.verification = "validation-failure";
          last = smtp::classify_local_failure(
              smtp::Stage::policy,
              host.name + " is not listed in the MTA-STS policy of " + group.domain, host.name,
              "validation-failure");
          refused_by_policy = true;
          continue;
        }
      }
      // A connection this host left idle, or a new one to one of its addresses.
      std::unique_ptr<smtp::SmtpConnection> connection =
          co_await connections_.take(host.name, requirement);
      if (!connection) {
        auto addresses = co_await resolver_.addresses(host.name);
        if (addresses.status != dns::Status::ok) {
          trace.trying(host.name, "");
          last = smtp::classify_local_failure(
              smtp::Stage::dns,
              "cannot resolve " + host.name + ": " + std::string(dns::to_string(addresses.status)),
              host.name);
          continue;
        }
        for (const auto& address : addresses.addresses) {
          trace.trying(host.name, address.to_string());
          auto opened = co_await smtp::SmtpConnection::open(host.name, address, settings_.port,
                                                            requirement, settings_.client);
          if (opened) {
            connection = std::move(*opened);
            break;
          }
          last = opened.error();
          if (!last.tls_result.empty()) {
            trace.verification = last.tls_result;
            refused_by_policy = refused_by_policy || mode == sts::Mode::enforce;
            if (listed) {
              tls_sessions_.failed(reported_policy(group.domain, policy),
                                   {last.tls_result, host.name, trace.ip});
            }
          }
        }
        if (!connection) {
          continue;
        }
        count_new_session(tls_sessions_, *connection, mode, listed,
                          reported_policy(group.domain, policy));
      }
      trace.trying(host.name, connection->address().to_string());
      const auto& tls = connection->tls();
      trace.tls_version = tls.version;
      trace.tls_cipher = tls.cipher;
      trace.tls_resumed = tls.resumed;
      trace.verification = tls.used ? std::string(tls::rfc8460_result_type(tls.certificate.verdict))
                                    : std::string("starttls-not-supported");
      if (mode == sts::Mode::testing && trace.verification != "valid") {
        // Testing mode: report what enforce would have refused, deliver anyway.
        log_event(spdlog::level::warn, "sts_testing_failure",
                  {{"queue_id", std::string_view(group.message_id)},
                   {"domain", std::string_view(group.domain)},
                   {"mx", std::string_view(host.name)},
                   {"result_type", std::string_view(trace.verification)}});
      }
      outcome = co_await connection->send(envelope, **content);
      used = std::move(connection);
      used_requirement = requirement;
    }
    if (!outcome.empty() || !refused_by_policy || rediscovered || policies_ == nullptr ||
        !queue::bounce_instead_of_deferring(first.arrival, clock_(), settings_.retry)) {
      break;
    }
    // RFC 8461 §5.1: mail is not bounced for an enforce failure before the
    // policy has been checked for an update; the hosts get one more chance
    // under the policy found now.
    log_event(spdlog::level::info, "sts_rediscovery",
              {{"queue_id", std::string_view(group.message_id)},
               {"domain", std::string_view(group.domain)},
               {"policy_id", std::string_view(trace.policy_id)},
               {"reason", std::string_view(last.diagnostic())}});
    auto discovery = co_await policies_->rediscover(group.domain);
    note_discovery(group.domain, discovery);
    policy = discovery.policy;
    rediscovered = true;
    refused_by_policy = false;
  }
  if (outcome.empty()) {
    // Every host failed: the recipients wait for another attempt. An enforce
    // failure is never a bounce by itself (RFC 8461 §5.1).
    last.disposition = smtp::Disposition::defer;
    if (mode == sts::Mode::enforce &&
        (!last.tls_result.empty() || last.stage == smtp::Stage::policy)) {
      // The queue's last error and a bounce name the policy that refused the host.
      last.text = "MTA-STS policy of " + group.domain + " (mode enforce, id " + trace.policy_id +
                  ") refused " + (last.remote_mta.empty() ? group.domain : last.remote_mta) + ": " +
                  (last.tls_result.empty() ? "" : last.tls_result + ": ") + last.text;
    }
    outcome = fail_all(last);
  }

  co_await record(group, outcome, **content);
  if (used) {
    co_await connections_.park(std::move(used), used_requirement);
  }

  // One line per attempt, with everything an operator asks about afterwards.
  std::map<std::string, std::vector<std::string>> by_status;
  std::map<std::string, std::string> reply_by_status;
  const auto now = clock_();
  for (std::size_t i = 0; i < outcome.size(); ++i) {
    std::string status;
    switch (outcome[i].disposition) {
      case smtp::Disposition::delivered:
        status = "sent";
        break;
      case smtp::Disposition::bounce:
        status = "bounced";
        break;
      default:
        status =
            queue::bounce_instead_of_deferring(group.recipients[i].arrival, now, settings_.retry)
                ? "bounced"
                : "deferred";
    }
    by_status[status].push_back("<" + group.recipients[i].address + ">");
    reply_by_status.emplace(status, outcome[i].diagnostic());
  }
  const auto delay =
      std::chrono::duration_cast<std::chrono::seconds>(now - group.recipients.front().arrival)
          .count();
  for (const auto& [status, recipients] : by_status) {
    log_event(status == "sent" ? spdlog::level::info : spdlog::level::warn, status,
              {{"queue_id", std::string_view(group.message_id)},
               {"recipients", recipients},
               {"domain", std::string_view(group.domain)},
               {"mx", std::string_view(trace.mx)},
               {"ip", std::string_view(trace.ip)},
               {"tls_version", std::string_view(trace.tls_version)},
               {"tls_cipher", std::string_view(trace.tls_cipher)},
               {"tls_resumed", trace.tls_resumed},
               {"policy_mode", std::string_view(trace.policy_mode)},
               {"policy_id", std::string_view(trace.policy_id)},
               {"verification", std::string_view(trace.verification)},
               {"reply", std::string_view(reply_by_status[status])},
               {"attempts", static_cast<std::uint64_t>(group.recipients.front().attempts + 1)},
               {"delay", static_cast<std::int64_t>(delay)}});
  }
}

void DeliveryEngine::note_discovery(const std::string& domain, const sts::Discovery& discovery) {
  if (!discovery.problem) {
    return;
  }
  log_event(spdlog::level::warn, "sts_discovery",
            {{"domain", std::string_view(domain)},
             {"result_type", std::string_view(discovery.problem->result_type)},
             {"detail", std::string_view(discovery.problem->detail)},
             {"cached_policy", discovery.policy.has_value()}});
  tls_sessions_.failed(reported_policy(domain, discovery.policy),
                       {discovery.problem->result_type, "", ""});
}

asio::awaitable<void> DeliveryEngine::record(const Group& group,
                                             const std::vector<smtp::DeliveryStatus>& statuses,
                                             const std::string& content) {
  const auto now = clock_();
  std::vector<queue::QueueWrite> writes;
  std::vector<DsnRecipient> bounced;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    const auto& recipient = group.recipients[i];
    const auto& status = statuses[i];
    queue::AttemptRecord record;
    record.message_id = group.message_id;
    record.address = recipient.address;
    record.last_error = status.diagnostic();
    bool bounce = status.disposition == smtp::Disposition::bounce;
    if (status.disposition == smtp::Disposition::delivered) {
      record.status = queue::RecipientStatus::sent;
      record.last_error.clear();
    } else if (!bounce &&
               queue::bounce_instead_of_deferring(recipient.arrival, now, settings_.retry)) {
      bounce = true;
    } else if (!bounce) {
      record.status = queue::RecipientStatus::deferred;
      record.next_attempt = queue::next_attempt_before_expiry(
          recipient.arrival, now, recipient.attempts + 1, settings_.retry, unit(random_));
    }
    if (bounce) {
      record.status = queue::RecipientStatus::bounced;
      std::string enhanced = status.enhanced;
      if (status.disposition != smtp::Disposition::bounce && enhanced.size() > 1 &&
          enhanced[0] == '4') {
        // Given up on after max_age: the last temporary failure made
        // permanent, as Postfix does, so that the DSN keeps its reason
        // (5.7.5 for a certificate an enforced policy refused).
        enhanced[0] = '5';
      } else if (enhanced.empty() || enhanced[0] != '5') {
        // RFC 3463 X.4.7 "delivery time expired", made permanent.
        enhanced = status.disposition == smtp::Disposition::bounce ? "5.0.0" : "5.4.7";
      }
      bounced.push_back({recipient.address, "failed", enhanced, status.remote_mta,
                         status.disposition == smtp::Disposition::bounce
                             ? status.diagnostic()
                             : "delivery time expired; last error: " + status.diagnostic()});
    }
    writes.emplace_back(std::move(record));
  }
  const auto& first = group.recipients.front();
  if (!bounced.empty() && needs_dsn(first.sender)) {
    DsnInput dsn;
    dsn.reporting_mta = settings_.hostname;
    dsn.original_id = group.message_id;
    dsn.original_sender = first.sender;
    dsn.arrival = first.arrival;
    dsn.now = now;
    dsn.recipients = bounced;
    dsn.original_content = content;
    dsn.smtputf8 = first.smtputf8;
    queue::NewMessage notice;
    notice.id = ids_.next();
    notice.arrival = now;
    notice.sender = "";  // RFC 5321 §4.5.5: never bounce a bounce
    notice.recipients = {first.sender};
    notice.client_address = "127.0.0.1";
    notice.helo = settings_.hostname;
    notice.content = compose_dsn(dsn, notice.id);
    notice.smtputf8 = dsn_is_global(dsn);
    notice.eight_bit_mime = std::any_of(notice.content.begin(), notice.content.end(), [](char c) {
      return static_cast<unsigned char>(c) >= 0x80;
    });
    log_event(spdlog::level::info, "bounce_queued",
              {{"queue_id", std::string_view(notice.id)},
               {"original_id", std::string_view(group.message_id)},
               {"recipient", std::string_view(first.sender)}});
    // The notice goes in before the records that may remove the original.
    writes.insert(writes.begin(), std::move(notice));
  }
  auto committed = co_await submit_together_and_wait(writer_, std::move(writes));
  if (!committed) {
    log_event(spdlog::level::err, "queue_write_failed",
              {{"queue_id", std::string_view(group.message_id)},
               {"error", std::string_view(committed.error())}});
  }
}

}  // namespace stsrelay::relay
