#include "queue/store.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <fcntl.h>
#include <limits>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <variant>

#include <sqlite3.h>

namespace stsrelay::queue {

namespace {

constexpr const char* database_file_name = "queue.db";

// Written to PRAGMA application_id ("STSR") so that a database made by
// something else is recognised and refused instead of being written into.
constexpr std::int64_t application_id = 0x53545352;

// Long enough for the daemon's writer and an operator's command to wait for
// each other's transactions, short enough to report a stuck lock.
constexpr int busy_timeout_ms = 5000;

// After a checkpoint, a WAL that grew with large bodies is truncated back to
// this size instead of keeping its largest size on disk forever.
constexpr std::int64_t wal_size_limit = 64 * 1024 * 1024;

// Each step upgrades the schema from version i to i + 1; the number of steps
// is the current version. A step runs inside the transaction that also sets
// user_version, so an interrupted migration leaves the old version intact.
constexpr std::array<const char*, Store::schema_version> migrations{
    // 0 -> 1: the first schema.
    R"sql(
CREATE TABLE messages (
  id             TEXT PRIMARY KEY NOT NULL,
  arrival_us     INTEGER NOT NULL,
  sender         TEXT NOT NULL,
  size           INTEGER NOT NULL,
  client_address TEXT NOT NULL,
  helo           TEXT NOT NULL,
  eight_bit_mime INTEGER NOT NULL CHECK (eight_bit_mime IN (0, 1)),
  smtputf8       INTEGER NOT NULL CHECK (smtputf8 IN (0, 1)),
  held           INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1)),
  content        BLOB NOT NULL
);
CREATE TABLE recipients (
  message_id      TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  position        INTEGER NOT NULL,
  address         TEXT NOT NULL,
  status          TEXT NOT NULL CHECK (status IN ('queued', 'deferred', 'sent', 'bounced')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT NOT NULL DEFAULT '',
  next_attempt_us INTEGER,
  PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
CREATE INDEX recipients_due ON recipients (status, next_attempt_us);
)sql",
};

static_assert(static_cast<int>(migrations.size()) == Store::schema_version);

enum class Query : std::size_t {
  insert_message,
  insert_recipient,
  list_messages,
  list_recipients,
  content,
  set_held,
  remove,
  last_id,
  due_recipients,
  record_attempt,
  unfinished_recipients,
  message,
  recipients_of_message,
  next_due,
  make_due,
  count,
};

constexpr std::array<const char*, static_cast<std::size_t>(Query::count)> query_text{
    // insert_message
    "INSERT INTO messages (id, arrival_us, sender, size, client_address, helo, eight_bit_mime, "
    "smtputf8, held, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
    // insert_recipient
    "INSERT INTO recipients (message_id, position, address, status, attempts, last_error, "
    "next_attempt_us) VALUES (?1, ?2, ?3, 'queued', 0, '', ?4)",
    // list_messages
    "SELECT id, sender, size, arrival_us, held, client_address, helo, eight_bit_mime, smtputf8 "
    "FROM messages ORDER BY id",
    // list_recipients
    "SELECT message_id, address, status, attempts, last_error, next_attempt_us FROM recipients "
    "ORDER BY message_id, position",
    // content
    "SELECT content FROM messages WHERE id = ?1",
    // set_held
    "UPDATE messages SET held = ?2 WHERE id = ?1",
    // remove
    "DELETE FROM messages WHERE id = ?1",
    // last_id
    "SELECT max(id) FROM messages",
    // due_recipients: one index range per status, each already in (next_attempt_us,
    // message_id, position) order, merged. With `status IN (...)` instead,
    // SQLite reads and sorts every due recipient before applying the LIMIT:
    // each pass would cost time in proportion to the backlog.
    "SELECT * FROM (SELECT r.message_id AS message_id, r.address, r.status, r.attempts, "
    "r.next_attempt_us AS next_attempt_us, m.arrival_us, m.sender, m.eight_bit_mime, m.smtputf8, "
    "m.size, r.position AS position FROM recipients AS r JOIN messages AS m ON m.id = "
    "r.message_id WHERE r.status = 'queued' AND r.next_attempt_us <= ?1 AND m.held = 0 ORDER BY "
    "r.next_attempt_us, r.message_id, r.position LIMIT ?2)"
    " UNION ALL "
    "SELECT * FROM (SELECT r.message_id, r.address, r.status, r.attempts, "
    "r.next_attempt_us, m.arrival_us, m.sender, m.eight_bit_mime, m.smtputf8, "
    "m.size, r.position FROM recipients AS r JOIN messages AS m ON m.id = "
    "r.message_id WHERE r.status = 'deferred' AND r.next_attempt_us <= ?1 AND m.held = 0 ORDER BY "
    "r.next_attempt_us, r.message_id, r.position LIMIT ?2)"
    " ORDER BY next_attempt_us, message_id, position LIMIT ?2",
    // record_attempt
    "UPDATE recipients SET status = ?3, attempts = attempts + 1, last_error = ?4, "
    "next_attempt_us = ?5 WHERE message_id = ?1 AND address = ?2",
    // unfinished_recipients
    "SELECT count(*) FROM recipients WHERE message_id = ?1 AND status IN ('queued', 'deferred')",
    // message
    "SELECT id, sender, size, arrival_us, held, client_address, helo, eight_bit_mime, smtputf8 "
    "FROM messages WHERE id = ?1",
    // recipients_of_message
    "SELECT message_id, address, status, attempts, last_error, next_attempt_us FROM recipients "
    "WHERE message_id = ?1 ORDER BY position",
    // next_due
    "SELECT min(r.next_attempt_us) FROM recipients AS r JOIN messages AS m ON m.id = "
    "r.message_id WHERE r.status IN ('queued', 'deferred') AND m.held = 0",
    // make_due
    "UPDATE recipients SET next_attempt_us = ?1 WHERE status IN ('queued', 'deferred') AND "
    "next_attempt_us > ?1 AND message_id IN (SELECT id FROM messages WHERE held = 0)",
};

std::int64_t to_microseconds(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

TimePoint from_microseconds(std::int64_t microseconds) {
  return TimePoint(
      std::chrono::duration_cast<TimePoint::duration>(std::chrono::microseconds(microseconds)));
}

std::string column_text(sqlite3_stmt* statement, int column) {
  const auto* data = sqlite3_column_text(statement, column);
  const int size = sqlite3_column_bytes(statement, column);
  if (data == nullptr) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
}

std::string column_blob(sqlite3_stmt* statement, int column) {
  const auto* data = sqlite3_column_blob(statement, column);
  const int size = sqlite3_column_bytes(statement, column);
  if (data == nullptr) {
    return {};
  }
  return std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
}

struct DatabaseCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};

struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};

using StatementPointer = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// One use of a cached prepared statement: binds, steps, and resets it when
// done, so that no statement keeps a read transaction (and a WAL snapshot)
// open between calls.
class BoundStatement {
 public:
  explicit BoundStatement(sqlite3_stmt* statement) : statement_(statement) {}
  BoundStatement(BoundStatement&& other) noexcept
      : statement_(std::exchange(other.statement_, nullptr)), bind_result_(other.bind_result_) {}
  BoundStatement& operator=(BoundStatement&&) = delete;
  BoundStatement(const BoundStatement&) = delete;
  BoundStatement& operator=(const BoundStatement&) = delete;
  ~BoundStatement() {
    if (statement_ != nullptr) {
      sqlite3_reset(statement_);
      sqlite3_clear_bindings(statement_);
    }
  }

  // The text must outlive the step() calls: it is bound without a copy.
  BoundStatement& text(int index, std::string_view value) {
    return check(sqlite3_bind_text64(statement_, index, not_null(value), value.size(),
                                     SQLITE_STATIC, SQLITE_UTF8));
  }
  BoundStatement& blob(int index, std::string_view value) {
    return check(
        sqlite3_bind_blob64(statement_, index, not_null(value), value.size(), SQLITE_STATIC));
  }
  BoundStatement& integer(int index, std::int64_t value) {
    return check(sqlite3_bind_int64(statement_, index, value));
  }
  BoundStatement& null(int index) { return check(sqlite3_bind_null(statement_, index)); }

  // SQLITE_ROW, SQLITE_DONE or an error code (including a failed bind).
  int step() { return bind_result_ != SQLITE_OK ? bind_result_ : sqlite3_step(statement_); }

  sqlite3_stmt* get() const { return statement_; }

 private:
  // SQLite binds a null pointer as SQL NULL, and an empty string_view may
  // have one: an empty value must stay an empty value.
  static const char* not_null(std::string_view value) {
    return value.data() != nullptr ? value.data() : "";
  }

  BoundStatement& check(int result) {
    if (bind_result_ == SQLITE_OK) {
      bind_result_ = result;
    }
    return *this;
  }

  sqlite3_stmt* statement_;
  int bind_result_ = SQLITE_OK;
};

std::string corrupt_message(const std::filesystem::path& path, std::string_view detail) {
  return "queue database " + path.string() + " is corrupt (" + std::string(detail) +
         "); refusing to use it rather than lose mail: keep a copy, repair or move it aside";
}

// Makes a new directory entry durable, as SQLite does for its WAL but not for
// the main database file.
void sync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// The connection and its cached statements; Store::Impl is this, named so
// that the helpers below can take it.
struct Database {
  std::filesystem::path path;
  std::unique_ptr<sqlite3, DatabaseCloser> db;
  // Declared after db: finalized before the database is closed.
  std::array<StatementPointer, static_cast<std::size_t>(Query::count)> statements;

  std::string error(std::string_view doing) const {
    return std::string(doing) + ": " + sqlite3_errmsg(db.get());
  }

  Result<void> execute(const char* sql, std::string_view doing) {
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return tl::unexpected(error(doing));
    }
    return {};
  }

  Result<BoundStatement> use(Query query) {
    auto& slot = statements[static_cast<std::size_t>(query)];
    if (!slot) {
      sqlite3_stmt* statement = nullptr;
      const int result = sqlite3_prepare_v3(db.get(), query_text[static_cast<std::size_t>(query)],
                                            -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr);
      if (result != SQLITE_OK) {
        sqlite3_finalize(statement);
        return tl::unexpected(error("cannot prepare a queue query"));
      }
      slot.reset(statement);
    }
    return BoundStatement(slot.get());
  }

  // Runs a one-row query whose single column is an integer.
  Result<std::int64_t> integer_pragma(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
      sqlite3_finalize(raw);
      return tl::unexpected(error(std::string("cannot run ") + sql));
    }
    StatementPointer statement(raw);
    if (sqlite3_step(raw) != SQLITE_ROW) {
      return tl::unexpected(error(std::string("cannot run ") + sql));
    }
    return sqlite3_column_int64(raw, 0);
  }
};

// A transaction that rolls back unless committed.
class Transaction {
 public:
  // BEGIN IMMEDIATE for writes: taking the write lock up front makes a busy
  // database wait (busy timeout) instead of failing on a stale snapshot.
  static Result<Transaction> begin_write(Database& impl) { return begin(impl, "BEGIN IMMEDIATE"); }
  // A read transaction: the queries in it see one snapshot.
  static Result<Transaction> begin_read(Database& impl) { return begin(impl, "BEGIN"); }

  Transaction(Transaction&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() { rollback(); }

  Result<void> commit() {
    auto* impl = std::exchange(impl_, nullptr);
    if (sqlite3_exec(impl->db.get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      std::string message = impl->error("cannot commit to the queue");
      Transaction(impl).rollback();
      return tl::unexpected(std::move(message));
    }
    return {};
  }

 private:
  explicit Transaction(Database* impl) : impl_(impl) {}

  static Result<Transaction> begin(Database& impl, const char* sql) {
    if (sqlite3_exec(impl.db.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return tl::unexpected(impl.error("cannot begin a queue transaction"));
    }
    return Transaction(&impl);
  }

  void rollback() {
    auto* impl = std::exchange(impl_, nullptr);
    // SQLite may already have rolled back by itself (after an I/O error).
    if (impl != nullptr && sqlite3_get_autocommit(impl->db.get()) == 0) {
      sqlite3_exec(impl->db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

  Database* impl_;
};

Result<void> check_integrity(Database& impl) {
  sqlite3_stmt* raw = nullptr;
  int result = sqlite3_prepare_v2(impl.db.get(), "PRAGMA quick_check", -1, &raw, nullptr);
  StatementPointer statement(raw);
  std::string problems;
  int problem_count = 0;
  while (result == SQLITE_OK || result == SQLITE_ROW) {
    result = sqlite3_step(raw);
    if (result != SQLITE_ROW) {
      break;
    }
    std::string line = column_text(raw, 0);
    if (line == "ok") {
      continue;
    }
    // The first few lines say enough; a badly damaged file yields a hundred.
    if (++problem_count <= 3) {
      problems += (problems.empty() ? "" : "; ") + line;
    }
  }
  if (result != SQLITE_DONE) {
    const int code = sqlite3_errcode(impl.db.get()) & 0xff;
    const std::string message = sqlite3_errmsg(impl.db.get());
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
      return tl::unexpected(corrupt_message(impl.path, message));
    }
    return tl::unexpected("cannot check queue database " + impl.path.string() + ": " + message);
  }
  if (problem_count > 0) {
    return tl::unexpected(corrupt_message(impl.path, "quick_check: " + problems));
  }
  return {};
}

Result<void> configure(Database& impl) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(impl.db.get(), "PRAGMA journal_mode = WAL", -1, &raw, nullptr) !=
      SQLITE_OK) {
    sqlite3_finalize(raw);
    return tl::unexpected(impl.error("cannot switch the queue database to WAL"));
  }
  StatementPointer statement(raw);
  if (sqlite3_step(raw) != SQLITE_ROW) {
    return tl::unexpected(impl.error("cannot switch the queue database to WAL"));
  }
  if (const std::string mode = column_text(raw, 0); mode != "wal") {
    return tl::unexpected("cannot switch the queue database to WAL: journal mode is " + mode);
  }
  statement.reset();

  // secure_delete = FAST: Debian's SQLite is built with secure_delete on,
  // which zeroes every overflow page of a delivered message's body and so
  // writes the whole body to the WAL, and again to the database, a second
  // time. FAST still zeroes deleted cells in the pages a delete writes anyway,
  // at no extra I/O; freed overflow pages are reused by the next message. The
  // queue directory is private to the relay's user.
  const std::string settings =
      "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = FAST; "
      "PRAGMA journal_size_limit = " +
      std::to_string(wal_size_limit) + ";";
  return impl.execute(settings.c_str(), "cannot configure the queue database");
}

// The schema version of a database this build may use, or why not. Reads
// only, so that a database we refuse is left exactly as it was.
Result<std::int64_t> usable_version(Database& impl) {
  const auto version = impl.integer_pragma("PRAGMA user_version");
  const auto application = impl.integer_pragma("PRAGMA application_id");
  const auto objects = impl.integer_pragma("SELECT count(*) FROM sqlite_master");
  if (!version || !application || !objects) {
    return tl::unexpected(!version       ? version.error()
                          : !application ? application.error()
                                         : objects.error());
  }
  const std::string file = impl.path.string();
  const bool ours = *application == application_id;
  const bool empty = *version == 0 && *application == 0 && *objects == 0;
  if (!ours && !empty) {
    return tl::unexpected("queue database " + file +
                          " is an SQLite database that stsrelay did not create; refusing to use "
                          "it (point queue.directory elsewhere)");
  }
  if (*version > Store::schema_version) {
    return tl::unexpected("queue database " + file + " has schema version " +
                          std::to_string(*version) + ", newer than this stsrelay supports (" +
                          std::to_string(Store::schema_version) +
                          "); refusing to use it: run the newer stsrelay that wrote it");
  }
  if (*version < 0) {
    return tl::unexpected("queue database " + file + " has an invalid schema version " +
                          std::to_string(*version));
  }
  return *version;
}

Result<void> migrate(Database& impl) {
  auto transaction = Transaction::begin_write(impl);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  // Again under the write lock: another process may have migrated meanwhile.
  const auto version = usable_version(impl);
  if (!version) {
    return tl::unexpected(version.error());
  }
  if (*version == Store::schema_version) {
    return transaction->commit();
  }
  const std::string file = impl.path.string();
  for (auto step = *version; step < Store::schema_version; ++step) {
    if (auto done = impl.execute(
            migrations[static_cast<std::size_t>(step)],
            "cannot migrate queue database " + file + " from version " + std::to_string(step));
        !done) {
      return done;
    }
  }
  const std::string stamp = "PRAGMA application_id = " + std::to_string(application_id) +
                            "; PRAGMA user_version = " + std::to_string(Store::schema_version) +
                            ";";
  if (auto done = impl.execute(stamp.c_str(), "cannot set the queue schema version"); !done) {
    return done;
  }
  return transaction->commit();
}

// The envelope columns of list_messages and message, in that order.
MessageRecord read_message_row(sqlite3_stmt* row) {
  MessageRecord record;
  record.id = column_text(row, 0);
  record.sender = column_text(row, 1);
  record.size = static_cast<std::uint64_t>(sqlite3_column_int64(row, 2));
  record.arrival = from_microseconds(sqlite3_column_int64(row, 3));
  record.held = sqlite3_column_int(row, 4) != 0;
  record.client_address = column_text(row, 5);
  record.helo = column_text(row, 6);
  record.eight_bit_mime = sqlite3_column_int(row, 7) != 0;
  record.smtputf8 = sqlite3_column_int(row, 8) != 0;
  return record;
}

// The columns of list_recipients and recipients_of_message after the
// message id, in that order.
RecipientRecord read_recipient_row(sqlite3_stmt* row) {
  RecipientRecord recipient;
  recipient.address = column_text(row, 1);
  recipient.status =
      recipient_status_from_string(column_text(row, 2)).value_or(RecipientStatus::queued);
  recipient.attempts = static_cast<unsigned>(sqlite3_column_int64(row, 3));
  recipient.last_error = column_text(row, 4);
  if (sqlite3_column_type(row, 5) != SQLITE_NULL) {
    recipient.next_attempt = from_microseconds(sqlite3_column_int64(row, 5));
  }
  return recipient;
}

Result<void> check_new_message(const NewMessage& message) {
  if (message.id.empty()) {
    return tl::unexpected(std::string("cannot queue a message without an id"));
  }
  if (message.recipients.empty()) {
    return tl::unexpected("cannot queue message " + message.id + ": it has no recipients");
  }
  return {};
}

// The writes below run inside a write transaction their caller owns; a
// failure leaves it to be rolled back.

Result<void> insert_message(Database& impl, const NewMessage& message) {
  if (auto checked = check_new_message(message); !checked) {
    return checked;
  }
  const auto arrival = to_microseconds(message.arrival);
  {
    auto statement = impl.use(Query::insert_message);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, message.id)
        .integer(2, arrival)
        .text(3, message.sender)
        .integer(4, static_cast<std::int64_t>(message.content.size()))
        .text(5, message.client_address)
        .text(6, message.helo)
        .integer(7, message.eight_bit_mime ? 1 : 0)
        .integer(8, message.smtputf8 ? 1 : 0)
        .blob(9, message.content);
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(impl.error("cannot queue message " + message.id));
    }
  }
  for (std::size_t position = 0; position < message.recipients.size(); ++position) {
    auto statement = impl.use(Query::insert_recipient);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, message.id)
        .integer(2, static_cast<std::int64_t>(position))
        .text(3, message.recipients[position])
        .integer(4, arrival);
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(impl.error("cannot queue message " + message.id + " for " +
                                       message.recipients[position]));
    }
  }
  return {};
}

// Store::record_attempt's semantics; false when the message has no such
// recipient (nothing is changed then).
Result<bool> record_attempt_in(Database& impl, std::string_view id, std::string_view address,
                               RecipientStatus status, std::string_view last_error,
                               std::optional<TimePoint> next_attempt) {
  const bool final = status == RecipientStatus::sent || status == RecipientStatus::bounced;
  if (!final && !next_attempt) {
    return tl::unexpected("cannot record a " + std::string(to_string(status)) + " attempt for " +
                          std::string(address) + " of message " + std::string(id) +
                          " without a next attempt time");
  }
  const auto failure = [&] {
    return impl.error("cannot record an attempt for " + std::string(address) + " of message " +
                      std::string(id));
  };
  {
    auto statement = impl.use(Query::record_attempt);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id).text(2, address).text(3, to_string(status)).text(4, last_error);
    if (final) {
      statement->null(5);
    } else {
      statement->integer(5, to_microseconds(*next_attempt));
    }
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(failure());
    }
    if (sqlite3_changes(impl.db.get()) == 0) {
      return false;
    }
  }
  std::int64_t unfinished = 0;
  {
    auto statement = impl.use(Query::unfinished_recipients);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id);
    if (statement->step() != SQLITE_ROW) {
      return tl::unexpected(failure());
    }
    unfinished = sqlite3_column_int64(statement->get(), 0);
  }
  if (unfinished == 0) {
    auto statement = impl.use(Query::remove);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id);
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(failure());
    }
  }
  return true;
}

Result<void> apply_one(Database& impl, const QueueWrite& write) {
  if (const auto* message = std::get_if<NewMessage>(&write)) {
    return insert_message(impl, *message);
  }
  const auto& attempt = std::get<AttemptRecord>(write);
  // A recipient that is gone was deleted by `queue delete` while its attempt
  // ran: there is nothing left to record, and that is no failure.
  auto recorded = record_attempt_in(impl, attempt.message_id, attempt.address, attempt.status,
                                    attempt.last_error, attempt.next_attempt);
  if (!recorded) {
    return tl::unexpected(recorded.error());
  }
  return {};
}

}  // namespace

struct Store::Impl : Database {};

Result<Store> Store::open(const std::filesystem::path& directory) {
  std::error_code ec;
  const bool created = std::filesystem::create_directories(directory, ec);
  if (ec) {
    return tl::unexpected("cannot create queue directory " + directory.string() + ": " +
                          ec.message());
  }
  if (created) {
    // Queued mail is nobody else's business.
    std::filesystem::permissions(directory, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }

  auto impl = std::make_unique<Impl>();
  impl->path = directory / database_file_name;
  const bool database_existed = std::filesystem::exists(impl->path, ec);
  sqlite3* raw = nullptr;
  const int result =
      sqlite3_open_v2(impl->path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  impl->db.reset(raw);
  if (result != SQLITE_OK) {
    return tl::unexpected("cannot open queue database " + impl->path.string() + ": " +
                          (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(result)));
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_timeout_ms);

  // Check before anything writes to the file.
  if (auto checked = check_integrity(*impl); !checked) {
    return tl::unexpected(checked.error());
  }
  if (auto version = usable_version(*impl); !version) {
    return tl::unexpected(version.error());
  }
  if (auto configured = configure(*impl); !configured) {
    return tl::unexpected("queue database " + impl->path.string() + ": " + configured.error());
  }
  if (auto migrated = migrate(*impl); !migrated) {
    return tl::unexpected(migrated.error());
  }
  if (!database_existed) {
    sync_directory(directory);
  }
  return Store(std::move(impl));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

std::filesystem::path Store::database_path() const {
  return impl_->path;
}

Result<void> Store::insert(std::span<const NewMessage> messages) {
  // Checked before the transaction so that a bad batch costs no lock.
  for (const auto& message : messages) {
    if (auto checked = check_new_message(message); !checked) {
      return checked;
    }
  }
  if (messages.empty()) {
    return {};
  }
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  for (const auto& message : messages) {
    if (auto inserted = insert_message(*impl_, message); !inserted) {
      return inserted;
    }
  }
  return transaction->commit();
}

Result<void> Store::apply(std::span<const QueueWrite> writes) {
  if (writes.empty()) {
    return {};
  }
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  for (const auto& write : writes) {
    if (auto applied = apply_one(*impl_, write); !applied) {
      return applied;
    }
  }
  return transaction->commit();
}

Result<std::vector<MessageRecord>> Store::list() {
  auto transaction = Transaction::begin_read(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  std::vector<MessageRecord> records;
  {
    auto statement = impl_->use(Query::list_messages);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    int result;
    while ((result = statement->step()) == SQLITE_ROW) {
      records.push_back(read_message_row(statement->get()));
    }
    if (result != SQLITE_DONE) {
      return tl::unexpected(impl_->error("cannot list the queue"));
    }
  }
  {
    auto statement = impl_->use(Query::list_recipients);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    // Both queries are ordered by message id, so one pass pairs them up.
    auto message = records.begin();
    int result;
    while ((result = statement->step()) == SQLITE_ROW) {
      auto* row = statement->get();
      const std::string message_id = column_text(row, 0);
      while (message != records.end() && message->id < message_id) {
        ++message;
      }
      if (message == records.end() || message->id != message_id) {
        continue;  // cannot happen with foreign keys on; never invent a message
      }
      message->recipients.push_back(read_recipient_row(row));
    }
    if (result != SQLITE_DONE) {
      return tl::unexpected(impl_->error("cannot list the queue"));
    }
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return records;
}

Result<std::optional<MessageRecord>> Store::message(std::string_view id) {
  auto transaction = Transaction::begin_read(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  const auto failure = [&] { return impl_->error("cannot read message " + std::string(id)); };
  MessageRecord record;
  {
    auto statement = impl_->use(Query::message);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id);
    switch (statement->step()) {
      case SQLITE_ROW:
        record = read_message_row(statement->get());
        break;
      case SQLITE_DONE:
        return std::optional<MessageRecord>();
      default:
        return tl::unexpected(failure());
    }
  }
  {
    auto statement = impl_->use(Query::recipients_of_message);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id);
    int result;
    while ((result = statement->step()) == SQLITE_ROW) {
      record.recipients.push_back(read_recipient_row(statement->get()));
    }
    if (result != SQLITE_DONE) {
      return tl::unexpected(failure());
    }
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return std::optional<MessageRecord>(std::move(record));
}

Result<std::optional<std::string>> Store::content(std::string_view id) {
  auto statement = impl_->use(Query::content);
  if (!statement) {
    return tl::unexpected(statement.error());
  }
  statement->text(1, id);
  switch (statement->step()) {
    case SQLITE_ROW:
      return std::optional<std::string>(column_blob(statement->get(), 0));
    case SQLITE_DONE:
      return std::optional<std::string>();
    default:
      return tl::unexpected(impl_->error("cannot read message " + std::string(id)));
  }
}

Result<bool> Store::set_held(std::string_view id, bool held) {
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  bool found = false;
  {
    auto statement = impl_->use(Query::set_held);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id).integer(2, held ? 1 : 0);
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(impl_->error(
          (held ? "cannot hold message " : "cannot release message ") + std::string(id)));
    }
    found = sqlite3_changes(impl_->db.get()) > 0;
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return found;
}

Result<bool> Store::remove(std::string_view id) {
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  bool found = false;
  {
    auto statement = impl_->use(Query::remove);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->text(1, id);
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(impl_->error("cannot delete message " + std::string(id)));
    }
    // Counts the messages row only, not the recipients deleted by cascade.
    found = sqlite3_changes(impl_->db.get()) > 0;
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return found;
}

Result<std::optional<std::string>> Store::last_id() {
  auto statement = impl_->use(Query::last_id);
  if (!statement) {
    return tl::unexpected(statement.error());
  }
  if (statement->step() != SQLITE_ROW) {
    return tl::unexpected(impl_->error("cannot read the last queue id"));
  }
  if (sqlite3_column_type(statement->get(), 0) == SQLITE_NULL) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(column_text(statement->get(), 0));
}

Result<std::vector<DueRecipient>> Store::due_recipients(TimePoint now, std::size_t limit) {
  auto statement = impl_->use(Query::due_recipients);
  if (!statement) {
    return tl::unexpected(statement.error());
  }
  const auto bounded_limit = static_cast<std::int64_t>(
      std::min<std::size_t>(limit, std::numeric_limits<std::int64_t>::max()));
  statement->integer(1, to_microseconds(now)).integer(2, bounded_limit);
  std::vector<DueRecipient> due;
  int result;
  while ((result = statement->step()) == SQLITE_ROW) {
    auto* row = statement->get();
    DueRecipient recipient;
    recipient.message_id = column_text(row, 0);
    recipient.address = column_text(row, 1);
    recipient.status =
        recipient_status_from_string(column_text(row, 2)).value_or(RecipientStatus::queued);
    recipient.attempts = static_cast<unsigned>(sqlite3_column_int64(row, 3));
    recipient.next_attempt = from_microseconds(sqlite3_column_int64(row, 4));
    recipient.arrival = from_microseconds(sqlite3_column_int64(row, 5));
    recipient.sender = column_text(row, 6);
    recipient.eight_bit_mime = sqlite3_column_int(row, 7) != 0;
    recipient.smtputf8 = sqlite3_column_int(row, 8) != 0;
    recipient.size = static_cast<std::uint64_t>(sqlite3_column_int64(row, 9));
    due.push_back(std::move(recipient));
  }
  if (result != SQLITE_DONE) {
    return tl::unexpected(impl_->error("cannot read the due recipients"));
  }
  return due;
}

Result<std::optional<TimePoint>> Store::next_due() {
  auto statement = impl_->use(Query::next_due);
  if (!statement) {
    return tl::unexpected(statement.error());
  }
  if (statement->step() != SQLITE_ROW) {
    return tl::unexpected(impl_->error("cannot read the next due time"));
  }
  if (sqlite3_column_type(statement->get(), 0) == SQLITE_NULL) {
    return std::optional<TimePoint>();
  }
  return std::optional<TimePoint>(from_microseconds(sqlite3_column_int64(statement->get(), 0)));
}

Result<std::size_t> Store::make_due(TimePoint now) {
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  std::size_t changed = 0;
  {
    auto statement = impl_->use(Query::make_due);
    if (!statement) {
      return tl::unexpected(statement.error());
    }
    statement->integer(1, to_microseconds(now));
    if (statement->step() != SQLITE_DONE) {
      return tl::unexpected(impl_->error("cannot reschedule the queue"));
    }
    changed = static_cast<std::size_t>(sqlite3_changes(impl_->db.get()));
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return changed;
}

Result<bool> Store::record_attempt(std::string_view id, std::string_view address,
                                   RecipientStatus status, std::string_view last_error,
                                   std::optional<TimePoint> next_attempt) {
  auto transaction = Transaction::begin_write(*impl_);
  if (!transaction) {
    return tl::unexpected(transaction.error());
  }
  auto recorded = record_attempt_in(*impl_, id, address, status, last_error, next_attempt);
  if (!recorded || !*recorded) {
    return recorded;  // the transaction rolls back: nothing was changed
  }
  if (auto committed = transaction->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return true;
}

}  // namespace stsrelay::queue
