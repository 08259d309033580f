#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "queue/message.hpp"
#include "queue/store.hpp"

namespace stsrelay::queue {

// The one writer of the daemon's queue. It runs on its own thread (off the
// event loop), takes every message submitted since its last commit and commits
// them in one transaction (group commit), and only then calls each message's
// completion. A completion with success means the message is durable.
class GroupCommitWriter {
 public:
  // Called on the writer thread; keep it short (post to your executor).
  using Completion = std::function<void(Result<void>)>;

  struct Stats {
    std::uint64_t commits = 0;
    std::uint64_t messages = 0;
  };

  explicit GroupCommitWriter(Store store, std::size_t max_batch = 256);
  ~GroupCommitWriter();  // stop()
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  void submit(NewMessage message, Completion done);
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
