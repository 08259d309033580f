// Holds many idle inbound SMTP sessions open on a server, so that its memory
// per session can be measured.
//
//   idle_sessions --server 127.0.0.1:2525 [--sessions 1000] [--helo NAME]
//                 [--ignore-stdin]
//
// Opens the sessions one after the other, each fully set up (220 greeting
// read, EHLO sent and its 250 read), prints "open N" on stdout once all are,
// then waits, idle, until stdin reaches end of file (unless --ignore-stdin)
// or SIGTERM/SIGINT arrives; then sends QUIT on each and closes them. A
// session the server closes while idle (its idle timeout, a restart) is
// reported on stderr, and the exit status is then 1. Raises its open-file
// limit to the hard limit when the sessions need more, and the hard limit too
// when it is privileged; otherwise says so and exits with status 1.

#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <poll.h>
#include <signal.h>
#include <string>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/blocking_smtp_client.hpp"
#include "relay/endpoint.hpp"

namespace {

using namespace stsrelay;

// Descriptors beyond the sessions': stdio, the signal fd, and a margin.
constexpr rlim_t spare_descriptors = 16;

bool raise_descriptor_limit(std::size_t sessions) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    std::cerr << "idle_sessions: getrlimit: " << std::strerror(errno) << '\n';
    return false;
  }
  const rlim_t needed = static_cast<rlim_t>(sessions) + spare_descriptors;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
      // Only a privileged process may raise its hard limit.
      const rlimit raised{needed, needed};
      if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        return true;
      }
      std::cerr << fmt::format(
          "idle_sessions: {} sessions need {} descriptors; the hard limit is {} and cannot be "
          "raised ({}): raise it with `ulimit -Hn` as root, or open fewer\n",
          sessions, needed, limit.rlim_max, std::strerror(errno));
      return false;
    }
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      std::cerr << "idle_sessions: setrlimit: " << std::strerror(errno) << '\n';
      return false;
    }
  }
  return true;
}

enum class WaitEnd { stdin_closed, signalled, session_lost };

// Waits for stdin's end, a signal, or a session that the server ends.
WaitEnd wait_idle(int signals, bool watch_stdin,
                  const std::vector<bench::BlockingSmtpClient>& sessions) {
  std::vector<pollfd> watched;
  watched.push_back({signals, POLLIN, 0});
  watched.push_back({watch_stdin ? STDIN_FILENO : -1, POLLIN, 0});
  for (const auto& session : sessions) {
    watched.push_back({session.native_handle(), POLLIN, 0});
  }
  for (;;) {
    if (::poll(watched.data(), watched.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      std::cerr << "idle_sessions: poll: " << std::strerror(errno) << '\n';
      return WaitEnd::session_lost;
    }
    if (watched[0].revents != 0) {
      return WaitEnd::signalled;
    }
    if (watched[1].revents != 0) {
      char buffer[4096];
      const auto got = ::read(STDIN_FILENO, buffer, sizeof buffer);
      if (got <= 0 && !(got < 0 && errno == EINTR)) {
        return WaitEnd::stdin_closed;
      }
    }
    for (std::size_t index = 2; index < watched.size(); ++index) {
      if (watched[index].revents != 0) {
        // Idle sessions hear nothing unless the server ends them (421, or a close).
        std::cerr << "idle_sessions: the server ended idle session " << index - 1 << '\n';
        return WaitEnd::session_lost;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Holds idle inbound SMTP sessions open (after EHLO) until stdin closes or SIGTERM"};
  std::string server;
  std::size_t count = 1000;
  std::string helo = "idle.client.test";
  double timeout_s = 30;
  bool ignore_stdin = false;
  app.add_option("--server", server, "ADDRESS:PORT of the SMTP server (plaintext)")->required();
  app.add_option("--sessions", count, "sessions to open")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--helo", helo, "EHLO name")->capture_default_str();
  app.add_option("--timeout-s", timeout_s, "longest wait for a connection or a reply")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--ignore-stdin", ignore_stdin, "wait for SIGTERM/SIGINT only");
  CLI11_PARSE(app, argc, argv);

  auto endpoint = relay::Endpoint::parse(server);
  if (!endpoint) {
    std::cerr << "idle_sessions: --server: " << endpoint.error() << '\n';
    return 2;
  }
  if (!raise_descriptor_limit(count)) {
    return 1;
  }
  const std::chrono::milliseconds timeout(static_cast<std::int64_t>(timeout_s * 1000));

  // Signals arrive through a descriptor, so one poll() waits for everything.
  sigset_t stopping;
  sigemptyset(&stopping);
  sigaddset(&stopping, SIGTERM);
  sigaddset(&stopping, SIGINT);
  sigprocmask(SIG_BLOCK, &stopping, nullptr);
  const int signals = ::signalfd(-1, &stopping, SFD_CLOEXEC);
  if (signals < 0) {
    std::cerr << "idle_sessions: signalfd: " << std::strerror(errno) << '\n';
    return 1;
  }

  std::vector<bench::BlockingSmtpClient> sessions;
  sessions.reserve(count);
  const std::string ehlo = fmt::format("EHLO {}\r\n", helo);
  for (std::size_t index = 1; index <= count; ++index) {
    auto failed = [&](const std::string& error) {
      std::cerr << fmt::format("idle_sessions: session {} of {}: {}\n", index, count, error);
      return 1;
    };
    auto session = bench::BlockingSmtpClient::connect(*endpoint, timeout);
    if (!session) {
      return failed(session.error());
    }
    if (auto greeting = session->expect("greeting", timeout); !greeting) {
      return failed(greeting.error());
    }
    if (auto sent = session->send(ehlo); !sent) {
      return failed("EHLO: " + sent.error());
    }
    if (auto reply = session->expect("EHLO", timeout); !reply) {
      return failed(reply.error());
    }
    sessions.push_back(std::move(*session));
  }
  std::cout << "open " << sessions.size() << std::endl;

  const auto end = wait_idle(signals, !ignore_stdin, sessions);
  // A polite end, not waited for: the server sees QUIT, then the close.
  for (auto& session : sessions) {
    (void)session.send("QUIT\r\n");
    session.close();
  }
  ::close(signals);
  return end == WaitEnd::session_lost ? 1 : 0;
}
