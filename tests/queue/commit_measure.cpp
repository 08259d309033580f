// Messages per second through the GroupCommitWriter, with one submitter that
// waits for each completion (one SMTP client) and with many concurrent ones.
// Usage: queue_commit_measure [seconds per run] [concurrent submitters]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

#include "queue/group_commit_writer.hpp"
#include "queue/queue_id.hpp"

namespace {

using namespace stsrelay::queue;

void run(const std::filesystem::path& directory, int submitters, double seconds) {
  auto store = Store::open(directory);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().c_str());
    std::exit(1);
  }
  QueueIdGenerator ids;
  GroupCommitWriter writer(std::move(*store));
  const std::string content(4096, 'x');
  std::atomic<bool> running{true};
  std::atomic<std::uint64_t> acknowledged{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < submitters; ++t) {
    threads.emplace_back([&] {
      while (running.load()) {
        NewMessage message;
        message.id = ids.next();
        message.arrival = std::chrono::system_clock::now();
        message.sender = "sender@example.net";
        message.recipients = {"rcpt@example.org"};
        message.client_address = "127.0.0.1";
        message.helo = "client";
        message.content = content;
        std::promise<bool> done;
        auto committed = done.get_future();
        writer.submit(std::move(message),
                      [&done](Result<void> result) { done.set_value(result.has_value()); });
        if (!committed.get()) {
          std::fprintf(stderr, "commit failed\n");
          std::exit(1);
        }
        acknowledged.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  running = false;
  for (auto& thread : threads) {
    thread.join();
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto stats = writer.stats();
  std::printf("%3d submitter(s): %8.0f messages/s, %7.0f commits/s, %6.2f messages/commit\n",
              submitters, static_cast<double>(acknowledged.load()) / elapsed,
              static_cast<double>(stats.commits) / elapsed,
              static_cast<double>(stats.messages) / static_cast<double>(stats.commits));
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  const int concurrent = argc > 2 ? std::atoi(argv[2]) : 50;
  std::string name = (std::filesystem::temp_directory_path() / "stsrelay-measure-XXXXXX").string();
  if (::mkdtemp(name.data()) == nullptr) {
    return 1;
  }
  run(std::filesystem::path(name) / "one", 1, seconds);
  run(std::filesystem::path(name) / "many", concurrent, seconds);
  std::filesystem::remove_all(name);
  return 0;
}
