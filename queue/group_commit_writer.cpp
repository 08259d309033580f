#include "queue/group_commit_writer.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace stsrelay::queue {

namespace {

// What a write that cannot be committed any more was about, for its error.
std::string describe(const std::vector<QueueWrite>& writes) {
  if (writes.empty()) {
    return "cannot write to the queue";
  }
  if (const auto* message = std::get_if<NewMessage>(&writes.front())) {
    return "cannot queue message " + message->id;
  }
  const auto& attempt = std::get<AttemptRecord>(writes.front());
  return "cannot record an attempt for " + attempt.address + " of message " + attempt.message_id;
}

}  // namespace

struct GroupCommitWriter::Impl {
  // One submission: its writes are committed together or not at all.
  struct Pending {
    std::vector<QueueWrite> writes;
    Completion done;
  };

  Impl(Store store, std::size_t max_batch)
      : store(std::move(store)), max_batch(std::max<std::size_t>(max_batch, 1)) {}

  void run() {
    std::vector<QueueWrite> writes;
    std::vector<std::size_t> ends;  // where each submission's writes end in writes
    std::vector<Completion> completions;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || !pending.empty(); });
        if (pending.empty()) {
          return;  // stopping, and everything submitted is committed
        }
        // Whatever arrived while the last commit ran goes into this one: the
        // batch grows with the load, with no waiting to fill it.
        const std::size_t count = std::min(pending.size(), max_batch);
        for (std::size_t i = 0; i < count; ++i) {
          auto& submission = pending.front();
          std::move(submission.writes.begin(), submission.writes.end(), std::back_inserter(writes));
          ends.push_back(writes.size());
          completions.push_back(std::move(submission.done));
          pending.pop_front();
        }
      }
      commit(writes, ends, completions);
      writes.clear();
      ends.clear();
      completions.clear();
    }
  }

  void commit(const std::vector<QueueWrite>& writes, const std::vector<std::size_t>& ends,
              std::vector<Completion>& completions) {
    auto result = store.apply(writes);
    if (result) {
      count_commit(writes);
      for (auto& done : completions) {
        done({});
      }
      return;
    }
    if (completions.size() == 1) {
      completions.front()(std::move(result));
      return;
    }
    // The batch is all or nothing; one bad submission (a duplicate id) must
    // not fail the others, so each gets its own transaction and its own
    // answer, still in the order submitted.
    std::size_t begin = 0;
    for (std::size_t i = 0; i < completions.size(); ++i) {
      const std::span<const QueueWrite> submission(writes.data() + begin, ends[i] - begin);
      auto single = store.apply(submission);
      if (single) {
        count_commit(submission);
      }
      completions[i](std::move(single));
      begin = ends[i];
    }
  }

  void count_commit(std::span<const QueueWrite> committed) {
    if (committed.empty()) {
      return;  // Store::apply begins no transaction for nothing
    }
    const auto new_messages = static_cast<std::uint64_t>(std::count_if(
        committed.begin(), committed.end(),
        [](const QueueWrite& write) { return std::holds_alternative<NewMessage>(write); }));
    const auto attempts = committed.size() - new_messages;
    commits.fetch_add(1, std::memory_order_relaxed);
    messages_committed.fetch_add(new_messages, std::memory_order_relaxed);
    attempts_committed.fetch_add(attempts, std::memory_order_relaxed);
    if (new_messages > 0) {
      commits_with_messages.fetch_add(1, std::memory_order_relaxed);
    }
    if (attempts > 0) {
      commits_with_attempts.fetch_add(1, std::memory_order_relaxed);
    }
  }

  Store store;
  const std::size_t max_batch;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Pending> pending;
  bool stopping = false;

  std::mutex stop_mutex;  // serialises joining
  std::thread thread;

  std::atomic<std::uint64_t> commits{0};
  std::atomic<std::uint64_t> messages_committed{0};
  std::atomic<std::uint64_t> attempts_committed{0};
  std::atomic<std::uint64_t> commits_with_messages{0};
  std::atomic<std::uint64_t> commits_with_attempts{0};
};

GroupCommitWriter::GroupCommitWriter(Store store, std::size_t max_batch)
    : impl_(std::make_unique<Impl>(std::move(store), max_batch)) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

GroupCommitWriter::~GroupCommitWriter() {
  stop();
}

void GroupCommitWriter::submit(NewMessage message, Completion done) {
  submit(QueueWrite(std::move(message)), std::move(done));
}

void GroupCommitWriter::submit(QueueWrite write, Completion done) {
  std::vector<QueueWrite> writes;
  writes.push_back(std::move(write));
  submit_together(std::move(writes), std::move(done));
}

void GroupCommitWriter::submit_together(std::vector<QueueWrite> writes, Completion done) {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->stopping) {
      impl_->pending.push_back({std::move(writes), std::move(done)});
      impl_->wake.notify_one();
      return;
    }
  }
  done(tl::unexpected(describe(writes) + ": the queue writer has stopped"));
}

void GroupCommitWriter::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  std::lock_guard lock(impl_->stop_mutex);
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
}

GroupCommitWriter::Stats GroupCommitWriter::stats() const {
  return Stats{impl_->commits.load(std::memory_order_relaxed),
               impl_->messages_committed.load(std::memory_order_relaxed),
               impl_->attempts_committed.load(std::memory_order_relaxed),
               impl_->commits_with_messages.load(std::memory_order_relaxed),
               impl_->commits_with_attempts.load(std::memory_order_relaxed)};
}

}  // namespace stsrelay::queue
