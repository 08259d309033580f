#include "relay/daemon.hpp"

#include <csignal>
#include <memory>
#include <optional>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"
#include "queue/store.hpp"
#include "relay/control_socket.hpp"
#include "relay/delivery.hpp"
#include "relay/event_log.hpp"
#include "relay/outbound_clients.hpp"
#include "relay/queue_sink.hpp"
#include "relay/tls_session_log.hpp"
#include "smtp/server.hpp"
#include "sts/policy_cache.hpp"
#include "sts/policy_engine.hpp"
#include "tls/client_context.hpp"
#include "tls/server_context.hpp"

namespace stsrelay::relay {

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Connection events, as log lines. Per-connection events are debug: a busy
// relay logs its mail, not every TCP session.
class LoggingObserver : public smtp::ServerObserver {
 public:
  void client_refused(std::string_view client, std::string_view reason) override {
    log_event(spdlog::level::warn, "refused", {{"client", client}, {"reason", reason}});
  }
  void session_opened(std::string_view client) override {
    log_event(spdlog::level::debug, "connect", {{"client", client}});
  }
  void session_closed(std::string_view client, std::string_view reason) override {
    log_event(spdlog::level::debug, "disconnect", {{"client", client}, {"reason", reason}});
  }
  void tls_established(std::string_view client, const smtp::TlsDetails& tls) override {
    log_event(spdlog::level::debug, "starttls",
              {{"client", client},
               {"tls_version", std::string_view(tls.version)},
               {"tls_cipher", std::string_view(tls.cipher)}});
  }
  void tls_failed(std::string_view client, std::string_view error) override {
    log_event(spdlog::level::warn, "starttls_failed", {{"client", client}, {"error", error}});
  }
  void internal_error(std::string_view client, std::string_view what) override {
    log_event(spdlog::level::err, "internal_error", {{"client", client}, {"error", what}});
  }
};

std::string per_commit(std::uint64_t writes, std::uint64_t commits) {
  return commits == 0
             ? std::string("0")
             : fmt::format("{:.2f}", static_cast<double>(writes) / static_cast<double>(commits));
}

void log_startup_failure(std::string_view what, std::string_view error) {
  log_event(spdlog::level::critical, "startup_failed", {{"stage", what}, {"error", error}});
}

std::vector<std::string> endpoint_strings(const std::vector<asio::ip::tcp::endpoint>& endpoints) {
  std::vector<std::string> texts;
  for (const auto& endpoint : endpoints) {
    texts.push_back(Endpoint{endpoint.address(), endpoint.port()}.to_string());
  }
  return texts;
}

// SIGHUP re-reads what can change safely while running: the log level.
void reload(const std::filesystem::path& config_file) {
  if (config_file.empty()) {
    log_event(spdlog::level::info, "reload", {{"result", std::string_view("no config file")}});
    return;
  }
  auto config = load_config(config_file);
  if (!config) {
    log_event(spdlog::level::err, "reload_failed",
              {{"config", std::string_view(config_file.native())},
               {"error", std::string_view(config.error().to_string())}});
    return;
  }
  set_log_level(config->log.level);
  log_event(spdlog::level::info, "reload",
            {{"config", std::string_view(config_file.native())},
             {"log_level", to_string(config->log.level)}});
}

// Policies in use are fetched again before they expire (RFC 8461 §5.1).
asio::awaitable<void> refresh_policies(sts::PolicyEngine& policies, asio::steady_timer& timer,
                                       const bool& stopping) {
  while (!stopping) {
    timer.expires_after(std::chrono::minutes(5));
    co_await timer.async_wait(use_tuple);
    if (!stopping) {
      co_await policies.refresh();
    }
  }
}

// The TLS session counts of each UTC day, logged when it ends (the rest at
// shutdown).
asio::awaitable<void> summarize_tls_sessions(DeliveryEngine& delivery, asio::steady_timer& timer,
                                             const bool& stopping) {
  while (!stopping) {
    const auto now = std::chrono::system_clock::now();
    timer.expires_after(end_of_utc_day(now) - now);
    co_await timer.async_wait(use_tuple);
    if (!stopping) {
      log_tls_sessions(delivery.tls_sessions().take());
    }
  }
}

asio::awaitable<void> handle_signals(asio::signal_set& signals, smtp::Server& server,
                                     DeliveryEngine& delivery, dns::Resolver& resolver,
                                     std::vector<asio::steady_timer*> periodic_timers,
                                     ControlSocket& control, bool& stopping,
                                     std::filesystem::path config_file) {
  for (;;) {
    auto [error, signal] = co_await signals.async_wait(use_tuple);
    if (error) {
      co_return;
    }
    if (signal == SIGHUP) {
      reload(config_file);
      continue;
    }
    log_event(spdlog::level::info, "stopping",
              {{"signal", std::string_view(signal == SIGTERM ? "SIGTERM" : "SIGINT")},
               {"sessions", static_cast<std::uint64_t>(server.active_sessions())}});
    stopping = true;
    for (auto* timer : periodic_timers) {
      timer->cancel();
    }
    control.close();
    server.stop();
    co_await server.drained();
    // Lookups still waiting end now; an attempt cut short that way is not
    // counted, and the mail stays as it was in the queue.
    resolver.cancel();
    co_await delivery.stop();
    signals.cancel();
    co_return;
  }
}

}  // namespace

int run_daemon(const Config& config, const std::filesystem::path& config_file) {
  setup_logging(config.log);

  std::shared_ptr<asio::ssl::context> tls;
  if (!config.listen.tls_cert.empty()) {
    auto context = tls::make_server_context(config.listen.tls_cert, config.listen.tls_key);
    if (!context) {
      log_startup_failure("tls", context.error());
      return 2;
    }
    tls = std::make_shared<asio::ssl::context>(std::move(*context));
  }

  auto store = queue::Store::open(config.queue.directory);
  if (!store) {
    log_startup_failure("queue", store.error());
    return 1;
  }
  auto last_id = store->last_id();
  if (!last_id) {
    log_startup_failure("queue", last_id.error());
    return 1;
  }
  queue::QueueIdGenerator ids(*last_id);

  // Policies learnt before a restart still protect mail after it: a relay
  // that forgot them could be downgraded by anyone able to block a fetch.
  std::optional<sts::PolicyCache> policies;
  if (config.sts.enabled) {
    auto loaded = sts::PolicyCache::load(config.sts.cache_file);
    if (loaded.warning) {
      log_event(spdlog::level::warn, "sts_cache_unusable",
                {{"error", std::string_view(*loaded.warning)}});
    }
    policies.emplace(std::move(loaded.cache));
  }
  auto reader = queue::Store::open(config.queue.directory);
  if (!reader) {
    log_startup_failure("queue", reader.error());
    return 1;
  }
  queue::GroupCommitWriter writer(std::move(*store));

  asio::io_context io(1);
  auto outbound = make_outbound_clients(io.get_executor(), config);
  if (!outbound) {
    log_startup_failure(outbound.error().stage, outbound.error().message);
    return outbound.error().exit_status;
  }
  dns::Resolver& resolver = *outbound->resolver;
  std::optional<sts::PolicyEngine> policy_engine;
  if (policies) {
    sts::PolicyEngine::Options engine_options;
    engine_options.on_cache_error = [](std::string_view error) {
      log_event(spdlog::level::err, "sts_cache_write_failed", {{"error", error}});
    };
    policy_engine.emplace(resolver, *outbound->fetcher, *policies, std::move(engine_options));
  }

  DeliverySettings delivery_settings;
  delivery_settings.hostname = config.hostname;
  delivery_settings.port = config.delivery.port;
  delivery_settings.max_connections = config.delivery.max_connections;
  delivery_settings.max_connections_per_domain = config.delivery.max_connections_per_domain;
  delivery_settings.connection_cache.per_host = config.delivery.max_connections_per_domain;
  delivery_settings.client.helo_name = config.effective_helo_name();
  delivery_settings.client.connect_timeout = config.delivery.connect_timeout;
  delivery_settings.client.command_timeout = config.delivery.command_timeout;
  delivery_settings.client.tls_context = outbound->tls_context;
  delivery_settings.retry.retry_min = config.queue.retry_min;
  delivery_settings.retry.retry_max = config.queue.retry_max;
  delivery_settings.retry.max_age = config.queue.max_age;
  DeliveryEngine delivery(io.get_executor(), std::move(delivery_settings), *reader, writer, ids,
                          resolver, policy_engine ? &*policy_engine : nullptr);
  smtp::ServerOptions options;
  for (const auto& address : config.listen.addresses) {
    options.endpoints.emplace_back(address.address, address.port);
  }
  options.session.hostname = config.hostname;
  options.session.max_message_size = config.listen.max_message_size;
  options.session.max_recipients = config.listen.max_recipients;
  options.session.new_message_id = [&ids] { return ids.next(); };
  options.max_connections = config.listen.max_connections;
  options.idle_timeout = config.listen.idle_timeout;
  options.client_allowed = [networks = config.listen.allowed_networks](const auto& address) {
    for (const auto& network : networks) {
      if (network.contains(address)) {
        return true;
      }
    }
    return false;
  };
  options.tls = tls;

  QueueSink sink(writer, [&delivery] { delivery.wake(); });
  LoggingObserver observer;
  smtp::Server server(io.get_executor(), std::move(options), sink, observer);
  if (auto listening = server.listen(); !listening) {
    log_startup_failure("listen", listening.error());
    return 1;
  }
  server.start();

  ControlSocket control(
      io.get_executor(), control_socket_path(config.queue.directory),
      [&delivery](std::string_view command) -> std::string {
        if (command == "ping") {
          return "pong";
        }
        if (command == "flush") {
          auto flushed = delivery.flush();
          log_event(spdlog::level::info, "flush",
                    {{"recipients", static_cast<std::uint64_t>(flushed ? *flushed : 0)}});
          return flushed ? "ok " + std::to_string(*flushed) : "error " + flushed.error();
        }
        return "error unknown command";
      });
  if (auto listening = control.listen(); !listening) {
    log_startup_failure("control", listening.error());
    return 1;
  }

  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  bool stopping = false;
  asio::steady_timer refresh_timer(io);
  asio::steady_timer summary_timer(io);
  auto rethrow = [](std::exception_ptr failure) {
    if (failure) {
      std::rethrow_exception(failure);  // a bug in delivery or shutdown: let it be seen
    }
  };
  asio::co_spawn(io,
                 handle_signals(signals, server, delivery, resolver,
                                {&refresh_timer, &summary_timer}, control, stopping, config_file),
                 rethrow);
  delivery.start();
  asio::co_spawn(io, summarize_tls_sessions(delivery, summary_timer, stopping), rethrow);
  if (policy_engine) {
    asio::co_spawn(io, refresh_policies(*policy_engine, refresh_timer, stopping), rethrow);
  }

  log_event(spdlog::level::info, "started",
            {{"version", std::string_view(STSRELAY_VERSION)},
             {"hostname", std::string_view(config.hostname)},
             {"listen", endpoint_strings(server.local_endpoints())},
             {"queue", std::string_view(config.queue.directory.native())},
             {"sts_policies", static_cast<std::uint64_t>(policies ? policies->all().size() : 0)},
             {"starttls", tls != nullptr}});
  io.run();

  log_tls_sessions(delivery.tls_sessions().take());
  writer.stop();
  const auto stats = writer.stats();
  // How well group commit batched: 1.00 means one commit (one fsync) per write.
  const std::string messages_per_commit = per_commit(stats.messages, stats.message_commits);
  const std::string attempts_per_commit = per_commit(stats.attempts, stats.attempt_commits);
  log_event(spdlog::level::info, "stopped",
            {{"messages_queued", stats.messages},
             {"commits", stats.commits},
             {"message_commits", stats.message_commits},
             {"messages_per_commit", std::string_view(messages_per_commit)},
             {"attempts_recorded", stats.attempts},
             {"attempt_commits", stats.attempt_commits},
             {"attempts_per_commit", std::string_view(attempts_per_commit)}});
  return 0;
}

}  // namespace stsrelay::relay
