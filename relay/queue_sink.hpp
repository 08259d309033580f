#pragma once

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
  explicit QueueSink(queue::GroupCommitWriter& writer) : writer_(writer) {}

  asio::awaitable<tl::expected<void, std::string>> store(smtp::ReceivedMessage message) override;

 private:
  queue::GroupCommitWriter& writer_;
};

// Awaits GroupCommitWriter::submit from a coroutine: the completion, which
// runs on the writer thread, is posted back to the coroutine's executor.
asio::awaitable<queue::Result<void>> submit_and_wait(queue::GroupCommitWriter& writer,
                                                     queue::NewMessage message);

}  // namespace stsrelay::relay
