#include "queue/group_commit_writer.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

namespace stsrelay::queue {

struct GroupCommitWriter::Impl {
  struct Pending {
    NewMessage message;
    Completion done;
  };

  Impl(Store store, std::size_t max_batch)
      : store(std::move(store)), max_batch(std::max<std::size_t>(max_batch, 1)) {}

  void run() {
    std::vector<NewMessage> messages;
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
          messages.push_back(std::move(pending.front().message));
          completions.push_back(std::move(pending.front().done));
          pending.pop_front();
        }
      }
      commit(messages, completions);
      messages.clear();
      completions.clear();
    }
  }

  void commit(std::vector<NewMessage>& messages, std::vector<Completion>& completions) {
    auto result = store.insert(messages);
    if (result) {
      count_commit(messages.size());
      for (auto& done : completions) {
        done({});
      }
      return;
    }
    if (messages.size() == 1) {
      completions.front()(std::move(result));
      return;
    }
    // The batch is all or nothing; one bad message (a duplicate id) must not
    // fail the others, so each gets its own transaction and its own answer.
    for (std::size_t i = 0; i < messages.size(); ++i) {
      auto single = store.insert(std::span<const NewMessage>(&messages[i], 1));
      if (single) {
        count_commit(1);
      }
      completions[i](std::move(single));
    }
  }

  void count_commit(std::size_t messages_in_commit) {
    commits.fetch_add(1, std::memory_order_relaxed);
    messages_committed.fetch_add(messages_in_commit, std::memory_order_relaxed);
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
};

GroupCommitWriter::GroupCommitWriter(Store store, std::size_t max_batch)
    : impl_(std::make_unique<Impl>(std::move(store), max_batch)) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

GroupCommitWriter::~GroupCommitWriter() {
  stop();
}

void GroupCommitWriter::submit(NewMessage message, Completion done) {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->stopping) {
      impl_->pending.push_back({std::move(message), std::move(done)});
      impl_->wake.notify_one();
      return;
    }
  }
  done(tl::unexpected("cannot queue message " + message.id + ": the queue writer has stopped"));
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
               impl_->messages_committed.load(std::memory_order_relaxed)};
}

}  // namespace stsrelay::queue
