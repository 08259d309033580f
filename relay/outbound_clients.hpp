#pragma once

#include <memory>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/ssl/context.hpp>
#include <tl/expected.hpp>

#include "dns/resolver.hpp"
#include "relay/config.hpp"
#include "sts/policy_fetcher.hpp"

namespace stsrelay::relay {

// What the relay talks to the outside world with, built from [dns], [sts]
// and delivery.ca_file: the daemon and `sts-check` use the same.
struct OutboundClients {
  std::unique_ptr<dns::Resolver> resolver;
  std::shared_ptr<asio::ssl::context> tls_context;  // policy fetches and SMTP
  std::unique_ptr<sts::PolicyFetcher> fetcher;      // uses *resolver
};

struct OutboundClientsError {
  std::string stage;  // "dns" or "tls"
  std::string message;
  int exit_status;  // 2 for a configuration problem (an unusable ca_file), else 1
};

tl::expected<OutboundClients, OutboundClientsError> make_outbound_clients(
    asio::any_io_executor executor, const Config& config);

}  // namespace stsrelay::relay
