#include "relay/outbound_clients.hpp"

#include "tls/client_context.hpp"

namespace stsrelay::relay {

tl::expected<OutboundClients, OutboundClientsError> make_outbound_clients(
    asio::any_io_executor executor, const Config& config) {
  dns::ResolverOptions resolver_options;
  for (const auto& server : config.dns.servers) {
    resolver_options.servers.emplace_back(server.address, server.port);
  }
  resolver_options.timeout = config.dns.timeout;
  auto resolver = dns::make_ares_resolver(executor, resolver_options);
  if (!resolver) {
    return tl::unexpected(OutboundClientsError{"dns", resolver.error(), 1});
  }
  auto tls_context = tls::make_client_context(config.delivery.ca_file);
  if (!tls_context) {
    return tl::unexpected(OutboundClientsError{"tls", tls_context.error(), 2});
  }
  sts::FetchOptions fetch_options;
  fetch_options.port = config.sts.policy_port;
  fetch_options.timeout = config.sts.fetch_timeout;
  fetch_options.max_size = config.sts.max_policy_size;
  auto fetcher = sts::make_https_policy_fetcher(executor, **resolver, *tls_context, fetch_options);
  return OutboundClients{std::move(*resolver), std::move(*tls_context), std::move(fetcher)};
}

}  // namespace stsrelay::relay
