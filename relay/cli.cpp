#include "relay/cli.hpp"

#include <algorithm>
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include "relay/config.hpp"
#include "relay/control_socket.hpp"
#include "relay/daemon.hpp"
#include "relay/health.hpp"
#include "relay/queue_commands.hpp"
#include "relay/sts_check.hpp"
#include "relay/version.hpp"

namespace stsrelay::relay {

namespace {

constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

struct Arguments {
  std::string config_file;
  bool json = false;
  bool no_connect = false;
  double timeout_seconds = 5;
  std::string id;
  std::string domain;
};

// Every subcommand takes --config, before or after its name: all of them
// write the same variable.
void add_config_option(CLI::App& app, Arguments& arguments) {
  app.add_option("-c,--config", arguments.config_file,
                 std::string("configuration file (default: ") + default_config_file +
                     " if it exists, else built-in defaults)")
      ->type_name("FILE");
}

CLI::App* add_subcommand(CLI::App& parent, const char* name, const char* description,
                         Arguments& arguments) {
  CLI::App* sub = parent.add_subcommand(name, description);
  add_config_option(*sub, arguments);
  return sub;
}

void add_id(CLI::App& sub, Arguments& arguments) {
  sub.add_option("ID", arguments.id, "queue id, as `stsrelay queue list` shows it")->required();
}

tl::expected<Config, int> load(const Arguments& arguments, std::ostream& err) {
  auto config = load_config(arguments.config_file);
  if (!config) {
    err << "stsrelay: config: " << config.error().to_string() << "\n";
    return tl::unexpected(exit_usage);
  }
  return std::move(*config);
}

}  // namespace

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Arguments arguments;
  CLI::App app("stsrelay: an outbound SMTP relay that enforces MTA-STS", "stsrelay");
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    std::string report = version_report();
    report.pop_back();  // CLI11 adds its own newline
    return report;
  });
  app.failure_message([](const CLI::App*, const CLI::Error& error) {
    return std::string("stsrelay: ") + error.what() + "\nRun with --help for more information.\n";
  });
  add_config_option(app, arguments);

  CLI::App* run = add_subcommand(app, "run", "run the relay in the foreground", arguments);
  CLI::App* check_config = add_subcommand(
      app, "check-config", "validate the configuration and print the effective one", arguments);
  CLI::App* version = add_subcommand(
      app, "version", "print the versions of stsrelay and of its libraries", arguments);

  CLI::App* queue = add_subcommand(app, "queue", "inspect and change the queue", arguments);
  queue->require_subcommand(1);
  CLI::App* queue_list_command =
      add_subcommand(*queue, "list", "list the queued messages", arguments);
  queue_list_command->add_flag("--json", arguments.json, "print a JSON array");
  CLI::App* queue_flush = add_subcommand(
      *queue, "flush", "ask the running relay to retry every deferred message now", arguments);
  CLI::App* queue_delete_command =
      add_subcommand(*queue, "delete", "remove a message from the queue", arguments);
  add_id(*queue_delete_command, arguments);
  CLI::App* queue_hold_command =
      add_subcommand(*queue, "hold", "keep a message from being delivered", arguments);
  add_id(*queue_hold_command, arguments);
  CLI::App* queue_release_command =
      add_subcommand(*queue, "release", "let a held message be delivered again", arguments);
  add_id(*queue_release_command, arguments);

  CLI::App* health = add_subcommand(
      app, "health", "check that the running relay's SMTP listener answers (for probes)",
      arguments);
  health->add_option("--timeout", arguments.timeout_seconds, "seconds to wait for the greeting")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();

  CLI::App* sts_check = add_subcommand(
      app, "sts-check", "check a domain's MTA-STS setup as a sender would", arguments);
  sts_check->add_option("DOMAIN", arguments.domain, "the recipient domain")->required();
  sts_check->add_flag("--json", arguments.json, "print one JSON object");
  sts_check->add_flag("--no-connect", arguments.no_connect, "do not try STARTTLS on the MX hosts");

  try {
    // CLI11 takes its arguments last first.
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& error) {
    // CLI11 reports "bogus" in `stsrelay bogus` as a missing subcommand.
    for (const CLI::App* level : {&app, queue}) {
      if (level->get_subcommands().empty() && level->remaining_size() > 0 &&
          (level == &app || *queue)) {
        err << "stsrelay: unknown command \"" << level->remaining().front()
            << "\"\nRun with --help for more information.\n";
        return exit_usage;
      }
    }
    const int status = app.exit(error, out, err);
    return status == 0 ? exit_ok : exit_usage;
  }

  try {
    if (*version) {
      out << version_report();
      return exit_ok;
    }
    const auto config = load(arguments, err);
    if (!config) {
      return config.error();
    }
    if (*run) {
      return run_daemon(*config, effective_config_file(arguments.config_file));
    }
    if (*check_config) {
      out << to_toml(*config);
      return exit_ok;
    }
    if (*queue_list_command) {
      return queue_list(*config, arguments.json, out, err);
    }
    if (*queue_delete_command) {
      return queue_delete(*config, arguments.id, out, err);
    }
    if (*queue_hold_command) {
      return queue_hold(*config, arguments.id, out, err);
    }
    if (*queue_release_command) {
      return queue_release(*config, arguments.id, out, err);
    }
    if (*queue_flush) {
      auto reply = send_control_command(control_socket_path(config->queue.directory), "flush");
      if (!reply || reply->rfind("ok", 0) != 0) {
        err << "stsrelay: queue flush: " << (reply ? *reply : reply.error()) << "\n";
        return exit_failure;
      }
      out << "flushed: " << reply->substr(std::min<std::size_t>(3, reply->size()))
          << " recipients made due now\n";
      return exit_ok;
    }
    if (*health) {
      return check_health(
          *config,
          std::chrono::milliseconds(static_cast<std::int64_t>(arguments.timeout_seconds * 1000)),
          out, err);
    }
    if (*sts_check) {
      return relay::sts_check(*config, arguments.domain, arguments.json, !arguments.no_connect, out,
                              err);
    }
  } catch (const std::exception& error) {
    err << "stsrelay: " << error.what() << "\n";
    return exit_failure;
  }
  err << "stsrelay: no command given\n";
  return exit_usage;
}

int run_cli(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    args.emplace_back(argv[i]);
  }
  return run_cli(args, std::cout, std::cerr);
}

}  // namespace stsrelay::relay
