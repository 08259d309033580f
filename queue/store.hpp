#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "queue/message.hpp"

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
  // they are durable.
  Result<void> insert(std::span<const NewMessage> messages);

  Result<std::vector<MessageRecord>> list();
  Result<std::optional<std::string>> content(std::string_view id);

  // Each returns false when no message has that id.
  Result<bool> set_held(std::string_view id, bool held);
  Result<bool> remove(std::string_view id);

  // The greatest id in the queue, to keep ids increasing across restarts.
  Result<std::optional<std::string>> last_id();

  std::filesystem::path database_path() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::queue
