// Samples a server's SMTP accept latency: the time from sending the final
// "." of DATA until the reply arrives, which for a durable relay is the time
// to make the message durable. A light sequential client, meant to run next
// to the real load (smtp-source), which cannot report this.
//
//   accept_probe --server 127.0.0.1:2525 [--messages 200] [--size 4096]
//                [--interval-ms 10] [--reuse [--per-connection 100]]
//                [--duration-s S] [--until-file PATH]
//
// Stops after --messages, after --duration-s, once --until-file exists, or
// on SIGTERM/SIGINT (after the message in flight), whichever comes first;
// with --duration-s or --until-file and no --messages there is no count
// limit. Prints one line of JSON on stdout (percentiles by nearest rank,
// null when no message was sent):
//
//   {"messages":200,"p50_ms":1.2,"p90_ms":1.9,"p99_ms":3.1,"max_ms":4.0,"mean_ms":1.3}
//
// Any reply other than 2xx (or 354 to DATA), a timeout or a closed
// connection ends it with exit status 1 and the reply on stderr.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <numeric>
#include <optional>
#include <signal.h>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/blocking_smtp_client.hpp"
#include "relay/endpoint.hpp"

namespace {

using namespace stsrelay;
using Clock = std::chrono::steady_clock;

std::atomic<bool> stop_requested{false};

extern "C" void request_stop(int) {
  stop_requested = true;
}

struct ProbeOptions {
  relay::Endpoint server;
  std::uint64_t messages = 200;
  std::size_t size = 4096;
  std::chrono::milliseconds interval{10};
  bool reuse = false;
  std::uint64_t per_connection = 100;
  std::optional<std::chrono::duration<double>> duration;
  std::optional<std::filesystem::path> until_file;
  std::string from = "probe@client.test";
  std::string to = "probe@example.test";
  std::string helo = "probe.client.test";
  std::chrono::milliseconds timeout{60'000};
};

// A message of about `size` octets (header and body), CRLF lines of at most
// 78 characters, none starting with a dot: no dot-stuffing needed.
std::string make_message(const ProbeOptions& options) {
  std::string message = fmt::format(
      "From: <{}>\r\nTo: <{}>\r\nSubject: accept latency probe\r\n"
      "Message-ID: <probe@{}>\r\n\r\n",
      options.from, options.to, options.helo);
  std::string line(76, 'x');
  line += "\r\n";
  while (message.size() + line.size() <= options.size) {
    message += line;
  }
  if (message.size() + 3 <= options.size) {
    message.append(options.size - message.size() - 2, 'y');
    message += "\r\n";
  }
  return message;
}

class Probe {
 public:
  explicit Probe(const ProbeOptions& options) : options_(options), body_(make_message(options)) {}

  // Sends one message; returns its accept latency.
  tl::expected<Clock::duration, std::string> send_one() {
    if (!connection_) {
      if (auto opened = open(); !opened) {
        return tl::unexpected(opened.error());
      }
    }
    auto& smtp = *connection_;
    const auto step = [&](const std::string& command, std::string_view after,
                          bool intermediate_ok = false) -> tl::expected<void, std::string> {
      if (auto sent = smtp.send(command); !sent) {
        return tl::unexpected(std::string(after) + ": " + sent.error());
      }
      if (auto reply = smtp.expect(after, options_.timeout, intermediate_ok); !reply) {
        return tl::unexpected(reply.error());
      }
      return {};
    };
    if (auto done = step(fmt::format("MAIL FROM:<{}>\r\n", options_.from), "MAIL"); !done) {
      return tl::unexpected(done.error());
    }
    if (auto done = step(fmt::format("RCPT TO:<{}>\r\n", options_.to), "RCPT"); !done) {
      return tl::unexpected(done.error());
    }
    if (auto done = step("DATA\r\n", "DATA", true); !done) {
      return tl::unexpected(done.error());
    }
    if (auto sent = smtp.send(body_); !sent) {
      return tl::unexpected("message body: " + sent.error());
    }
    const auto start = Clock::now();
    if (auto sent = smtp.send(".\r\n"); !sent) {
      return tl::unexpected("end of data: " + sent.error());
    }
    if (auto reply = smtp.expect("end of data", options_.timeout); !reply) {
      return tl::unexpected(reply.error());
    }
    const auto latency = Clock::now() - start;

    ++on_this_connection_;
    if (!options_.reuse || on_this_connection_ >= options_.per_connection) {
      if (auto closed = quit(); !closed) {
        return tl::unexpected(closed.error());
      }
    }
    return latency;
  }

  tl::expected<void, std::string> quit() {
    if (!connection_) {
      return {};
    }
    auto sent = connection_->send("QUIT\r\n");
    auto reply = sent ? connection_->expect("QUIT", options_.timeout)
                      : tl::expected<smtp::Reply, std::string>(tl::unexpect, sent.error());
    connection_.reset();
    if (!reply) {
      return tl::unexpected(reply.error());
    }
    return {};
  }

 private:
  tl::expected<void, std::string> open() {
    auto client = bench::BlockingSmtpClient::connect(options_.server, options_.timeout);
    if (!client) {
      return tl::unexpected(client.error());
    }
    if (auto greeting = client->expect("greeting", options_.timeout); !greeting) {
      return tl::unexpected(greeting.error());
    }
    if (auto sent = client->send(fmt::format("EHLO {}\r\n", options_.helo)); !sent) {
      return tl::unexpected("EHLO: " + sent.error());
    }
    if (auto reply = client->expect("EHLO", options_.timeout); !reply) {
      return tl::unexpected(reply.error());
    }
    connection_.emplace(std::move(*client));
    on_this_connection_ = 0;
    return {};
  }

  const ProbeOptions& options_;
  const std::string body_;
  std::optional<bench::BlockingSmtpClient> connection_;
  std::uint64_t on_this_connection_ = 0;
};

double milliseconds(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

// Nearest rank: the smallest value with at least `percent` % of the values at or below it.
double percentile(const std::vector<double>& sorted, double percent) {
  const auto rank =
      static_cast<std::size_t>(std::ceil(percent / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string summary(std::vector<double> latencies) {
  if (latencies.empty()) {
    return R"({"messages":0,"p50_ms":null,"p90_ms":null,"p99_ms":null,"max_ms":null,)"
           R"("mean_ms":null})";
  }
  std::sort(latencies.begin(), latencies.end());
  const double mean = std::accumulate(latencies.begin(), latencies.end(), 0.0) /
                      static_cast<double>(latencies.size());
  return fmt::format(
      R"({{"messages":{},"p50_ms":{:.3f},"p90_ms":{:.3f},"p99_ms":{:.3f},"max_ms":{:.3f},)"
      R"("mean_ms":{:.3f}}})",
      latencies.size(), percentile(latencies, 50), percentile(latencies, 90),
      percentile(latencies, 99), latencies.back(), mean);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Samples SMTP accept latency: final \".\" of DATA to the server's reply"};
  ProbeOptions options;
  std::string server;
  std::uint64_t interval_ms = 10;
  double duration_s = 0;
  std::string until_file;
  double timeout_s = 60;
  app.add_option("--server", server, "ADDRESS:PORT of the SMTP server (plaintext)")->required();
  auto* messages = app.add_option("--messages", options.messages, "messages to send")
                       ->capture_default_str()
                       ->check(CLI::PositiveNumber);
  app.add_option("--size", options.size, "message size in octets, header included")
      ->capture_default_str();
  app.add_option("--interval-ms", interval_ms, "pause between messages")->capture_default_str();
  app.add_flag("--reuse", options.reuse,
               "several messages per connection (default: one, like smtp-source)");
  app.add_option("--per-connection", options.per_connection, "messages per connection with --reuse")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--duration-s", duration_s, "stop once this many seconds have passed")
      ->check(CLI::PositiveNumber);
  app.add_option("--until-file", until_file, "stop once this file exists");
  app.add_option("--from", options.from, "envelope sender")->capture_default_str();
  app.add_option("--to", options.to, "envelope recipient")->capture_default_str();
  app.add_option("--helo", options.helo, "EHLO name")->capture_default_str();
  app.add_option("--timeout-s", timeout_s, "longest wait for a connection or a reply")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  auto endpoint = relay::Endpoint::parse(server);
  if (!endpoint) {
    std::cerr << "accept_probe: --server: " << endpoint.error() << '\n';
    return 2;
  }
  options.server = *endpoint;
  options.interval = std::chrono::milliseconds(interval_ms);
  options.timeout =
      std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(timeout_s * 1000)));
  if (duration_s > 0) {
    options.duration = std::chrono::duration<double>(duration_s);
  }
  if (!until_file.empty()) {
    options.until_file = until_file;
  }
  if ((options.duration || options.until_file) && messages->count() == 0) {
    options.messages = std::numeric_limits<std::uint64_t>::max();
  }

  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  Probe probe(options);
  std::vector<double> latencies;
  const auto started = Clock::now();
  const auto should_stop = [&] {
    std::error_code ignored;
    return stop_requested || latencies.size() >= options.messages ||
           (options.duration && Clock::now() - started >= *options.duration) ||
           (options.until_file && std::filesystem::exists(*options.until_file, ignored));
  };
  while (!should_stop()) {
    auto latency = probe.send_one();
    if (!latency) {
      std::cerr << "accept_probe: message " << latencies.size() + 1 << ": " << latency.error()
                << '\n';
      return 1;
    }
    latencies.push_back(milliseconds(*latency));
    if (options.interval.count() > 0 && !should_stop()) {
      std::this_thread::sleep_for(options.interval);
    }
  }
  if (auto closed = probe.quit(); !closed) {
    std::cerr << "accept_probe: " << closed.error() << '\n';
    return 1;
  }
  std::cout << summary(std::move(latencies)) << std::endl;
  return 0;
}
