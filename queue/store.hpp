#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "queue/message.hpp"
#include "queue/queue_write.hpp"

namespace stsrelay::queue {

template <typename T>
using Result = tl::expected<T, std::string>;

// The durable queue: one SQLite database (WAL, synchronous=FULL) in the queue
// directory. Not thread-safe: each thread or process opens its own Store; the
// daemon's writes go through one GroupCommitWriter, while `stsrelay queue ...`
// commands open the same database concurrently (SQLite's locking arbitrates,
// with a busy timeout).
class Store {
 public:
  // Creates the directory and the schema if missing; migrates an older schema
  // or refuses a newer one; refuses a database that fails PRAGMA quick_check.
  static Result<Store> open(const std::filesystem::path& directory);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  // Commits all the messages in one transaction; when this returns success
  // they are durable. Every recipient starts queued, due at the arrival time.
  // All or nothing: if one message fails (an id already in the queue, no
  // recipients), none is inserted and the error names that message.
  Result<void> insert(std::span<const NewMessage> messages);

  // Commits the writes in one transaction, in order, all or nothing: a
  // NewMessage is inserted as by insert(), an AttemptRecord is recorded as by
  // record_attempt(). An AttemptRecord whose recipient no longer exists (its
  // message was deleted meanwhile, or finished by an earlier write) is
  // skipped, not an error.
  Result<void> apply(std::span<const QueueWrite> writes);

  Result<std::vector<MessageRecord>> list();
  Result<std::optional<std::string>> content(std::string_view id);
  // One message's envelope and recipients (in RCPT order), without content.
  Result<std::optional<MessageRecord>> message(std::string_view id);

  // Each returns false when no message has that id.
  Result<bool> set_held(std::string_view id, bool held);
  Result<bool> remove(std::string_view id);

  // The greatest id in the queue, to keep ids increasing across restarts.
  Result<std::optional<std::string>> last_id();

  // Recipients of messages not on hold, queued or deferred, whose next
  // attempt is at or before now: the earliest first, at most limit of them.
  Result<std::vector<DueRecipient>> due_recipients(TimePoint now, std::size_t limit);

  // The earliest next attempt of any recipient due_recipients could return
  // (unheld, queued or deferred), so a scheduler can sleep until then; none
  // when nothing is waiting.
  Result<std::optional<TimePoint>> next_due();

  // `queue flush`: every queued or deferred recipient of a message not on
  // hold whose next attempt is after now becomes due at now. Returns how
  // many recipients were rescheduled.
  Result<std::size_t> make_due(TimePoint now);

  // Records the outcome of one delivery attempt to every recipient of message
  // id with that address: counts the attempt and sets status, last_error and
  // next_attempt (required for queued and deferred, ignored for sent and
  // bounced). Once no recipient of the message is left queued or deferred,
  // the message is removed in the same transaction, so anything that needs it
  // (a bounce to the sender) must be queued first. Returns false when there
  // is no such recipient (the message was deleted meanwhile).
  Result<bool> record_attempt(std::string_view id, std::string_view address, RecipientStatus status,
                              std::string_view last_error, std::optional<TimePoint> next_attempt);

  // The version of the schema this build creates and reads; PRAGMA
  // user_version of the database holds it.
  static constexpr int schema_version = 1;

  std::filesystem::path database_path() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::queue
