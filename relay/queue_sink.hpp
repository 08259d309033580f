#pragma once

#include <functional>
#include <vector>

#include <asio/awaitable.hpp>
#include <tl/expected.hpp>

#include "queue/group_commit_writer.hpp"
#include "smtp/server.hpp"

namespace stsrelay::relay {

// Hands each message the SMTP server received to the queue's group-commit
// writer and resumes the session only once the commit holding it is durable,
// then logs the `queued` event.
class QueueSink : public smtp::MessageSink {
 public:
  // on_queued runs after each commit (the delivery engine wakes up).
  QueueSink(queue::GroupCommitWriter& writer, std::function<void()> on_queued = {})
      : writer_(writer), on_queued_(std::move(on_queued)) {}

  asio::awaitable<tl::expected<void, std::string>> store(smtp::ReceivedMessage message) override;

 private:
  queue::GroupCommitWriter& writer_;
  std::function<void()> on_queued_;
};

// Awaits GroupCommitWriter::submit from a coroutine: the completion, which
// runs on the writer thread, is posted back to the coroutine's executor.
asio::awaitable<queue::Result<void>> submit_and_wait(queue::GroupCommitWriter& writer,
                                                     queue::NewMessage message);
// The same for writes that commit all or none (GroupCommitWriter::submit_together).
asio::awaitable<queue::Result<void>> submit_together_and_wait(
    queue::GroupCommitWriter& writer, std::vector<queue::QueueWrite> writes);

}  // namespace stsrelay::relay
