#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "queue/message.hpp"
#include "queue/queue_write.hpp"
#include "queue/store.hpp"

namespace stsrelay::queue {

// The one writer of the daemon's queue. It runs on its own thread (off the
// event loop), takes every write submitted since its last commit and commits
// them in one transaction (group commit), in the order submitted, and only
// then calls each submission's completion. A completion with success means
// the write is durable.
class GroupCommitWriter {
 public:
  // Called on the writer thread; keep it short (post to your executor).
  using Completion = std::function<void(Result<void>)>;

  struct Stats {
    std::uint64_t commits = 0;
    std::uint64_t messages = 0;  // NewMessage writes committed
    std::uint64_t attempts = 0;  // AttemptRecord writes committed
    // Commits that held at least one NewMessage (resp. AttemptRecord): the
    // group-commit ratio is messages / message_commits, 1 without batching.
    std::uint64_t message_commits = 0;
    std::uint64_t attempt_commits = 0;
  };

  explicit GroupCommitWriter(Store store, std::size_t max_batch = 256);
  ~GroupCommitWriter();  // stop()
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // When a batch fails as a whole, each submission in it is retried in a
  // transaction of its own, so that one bad submission fails alone; a
  // submission can then succeed although one submitted before it failed.
  void submit(NewMessage message, Completion done);
  void submit(QueueWrite write, Completion done);
  // Writes that must be committed all or none, in this order (a bounce and
  // the attempt record that finishes the bounced message): one submission,
  // one completion. Batched with other submissions like any other.
  void submit_together(std::vector<QueueWrite> writes, Completion done);

  // Commits what is pending, then stops the thread; later submissions fail
  // at once (their completion runs on the caller's thread). Joins the writer
  // thread, so it must not be called from a completion.
  void stop();
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::queue
