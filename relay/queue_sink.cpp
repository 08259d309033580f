#include "relay/queue_sink.hpp"

#include <algorithm>
#include <memory>

#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "relay/event_log.hpp"

namespace stsrelay::relay {

namespace {

// Awaits one GroupCommitWriter submission: its completion, which runs on the
// writer thread, is posted back to the coroutine's executor.
template <typename Submit>
asio::awaitable<queue::Result<void>> await_commit(Submit submit) {
  auto executor = co_await asio::this_coro::executor;
  auto initiate = [executor](auto handler, Submit submit) {
    auto shared_handler = std::make_shared<decltype(handler)>(std::move(handler));
    submit([shared_handler, executor](queue::Result<void> result) {
      asio::post(executor, [shared_handler, result = std::move(result)]() mutable {
        (*shared_handler)(std::move(result));
      });
    });
  };
  auto result =
      co_await asio::async_initiate<decltype(asio::use_awaitable), void(queue::Result<void>)>(
          initiate, asio::use_awaitable, std::move(submit));
  co_return result;
}

}  // namespace

asio::awaitable<queue::Result<void>> submit_and_wait(queue::GroupCommitWriter& writer,
                                                     queue::NewMessage message) {
  // g++ 12 mishandles a capturing lambda built inside a co_await expression:
  // name it first.
  auto submit = [&writer,
                 message = std::move(message)](queue::GroupCommitWriter::Completion done) mutable {
    writer.submit(std::move(message), std::move(done));
  };
  auto result = co_await await_commit(std::move(submit));
  co_return result;
}

asio::awaitable<queue::Result<void>> submit_together_and_wait(
    queue::GroupCommitWriter& writer, std::vector<queue::QueueWrite> writes) {
  auto submit = [&writer,
                 writes = std::move(writes)](queue::GroupCommitWriter::Completion done) mutable {
    writer.submit_together(std::move(writes), std::move(done));
  };
  auto result = co_await await_commit(std::move(submit));
  co_return result;
}

asio::awaitable<tl::expected<void, std::string>> QueueSink::store(smtp::ReceivedMessage message) {
  queue::NewMessage entry;
  entry.id = message.id;
  entry.arrival = std::chrono::system_clock::now();
  entry.sender = message.sender;
  // A client may name a recipient twice; it gets one copy, as with Postfix.
  std::vector<std::string> logged_recipients;
  for (const auto& recipient : message.recipients) {
    if (std::find(entry.recipients.begin(), entry.recipients.end(), recipient) ==
        entry.recipients.end()) {
      entry.recipients.push_back(recipient);
      logged_recipients.push_back("<" + recipient + ">");
    }
  }
  entry.client_address = message.client_address;
  entry.helo = message.helo;
  entry.eight_bit_mime = message.body == smtp::BodyType::eight_bit_mime;
  entry.smtputf8 = message.smtputf8;
  entry.content = std::move(message.content);
  const std::uint64_t size = entry.content.size();

  auto committed = co_await submit_and_wait(writer_, std::move(entry));
  const std::string sender = "<" + message.sender + ">";
  if (!committed) {
    log_event(spdlog::level::err, "queue_failed",
              {{"queue_id", std::string_view(message.id)},
               {"client", std::string_view(message.client_address)},
               {"sender", std::string_view(sender)},
               {"recipients", logged_recipients},
               {"size", size},
               {"error", std::string_view(committed.error())}});
    co_return tl::unexpected(std::string("Error: queue file write error"));
  }
  if (on_queued_) {
    on_queued_();
  }
  // The queue id is also the id the client saw: "250 2.0.0 Ok: queued as <id>".
  log_event(spdlog::level::info, "queued",
            {{"queue_id", std::string_view(message.id)},
             {"client", std::string_view(message.client_address)},
             {"helo", std::string_view(message.helo)},
             {"sender", std::string_view(sender)},
             {"recipients", logged_recipients},
             {"size", size},
             {"tls", message.over_tls}});
  co_return tl::expected<void, std::string>{};
}

}  // namespace stsrelay::relay
