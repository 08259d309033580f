#include "relay/daemon.hpp"

#include <csignal>
#include <memory>
#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>

#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"
#include "queue/store.hpp"
#include "relay/event_log.hpp"
#include "relay/queue_sink.hpp"
#include "smtp/server.hpp"
#include "sts/policy_cache.hpp"
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

asio::awaitable<void> handle_signals(asio::signal_set& signals, smtp::Server& server,
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
    server.stop();
    co_await server.drained();
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
  queue::GroupCommitWriter writer(std::move(*store));

  asio::io_context io(1);
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

  QueueSink sink(writer);
  LoggingObserver observer;
  smtp::Server server(io.get_executor(), std::move(options), sink, observer);
  if (auto listening = server.listen(); !listening) {
    log_startup_failure("listen", listening.error());
    return 1;
  }
  server.start();

  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  asio::co_spawn(io, handle_signals(signals, server, config_file), [](std::exception_ptr failure) {
    if (failure) {
      std::rethrow_exception(failure);  // a bug in shutdown: let it be seen
    }
  });

  log_event(spdlog::level::info, "started",
            {{"version", std::string_view(STSRELAY_VERSION)},
             {"hostname", std::string_view(config.hostname)},
             {"listen", endpoint_strings(server.local_endpoints())},
             {"queue", std::string_view(config.queue.directory.native())},
             {"sts_policies", static_cast<std::uint64_t>(policies ? policies->all().size() : 0)},
             {"starttls", tls != nullptr}});
  io.run();

  writer.stop();
  const auto stats = writer.stats();
  log_event(spdlog::level::info, "stopped",
            {{"messages_queued", stats.messages}, {"commits", stats.commits}});
  return 0;
}

}  // namespace stsrelay::relay
