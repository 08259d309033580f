#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "queue/store.hpp"
#include "tests/queue/fixtures.hpp"

namespace stsrelay::queue {
namespace {

using test_support::make_message;
using test_support::TempDirectory;

// The database as an operator's sqlite3 shell sees it.
class RawDatabase {
 public:
  explicit RawDatabase(const std::filesystem::path& file) {
    if (sqlite3_open(file.c_str(), &db_) != SQLITE_OK) {
      throw std::runtime_error(sqlite3_errmsg(db_));
    }
  }
  ~RawDatabase() { sqlite3_close(db_); }
  RawDatabase(const RawDatabase&) = delete;
  RawDatabase& operator=(const RawDatabase&) = delete;

  void execute(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      std::string error = message != nullptr ? message : "?";
      sqlite3_free(message);
      throw std::runtime_error(sql + ": " + error);
    }
  }

  std::string text(const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    }
    std::string value;
    if (sqlite3_step(statement) == SQLITE_ROW) {
      const auto* data = sqlite3_column_text(statement, 0);
      value = data != nullptr ? reinterpret_cast<const char*>(data) : "";
    }
    sqlite3_finalize(statement);
    return value;
  }

 private:
  sqlite3* db_ = nullptr;
};

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << bytes;
}

void fill_queue(const std::filesystem::path& directory, int messages) {
  auto store = Store::open(directory);
  ASSERT_TRUE(store) << store.error();
  std::vector<NewMessage> batch;
  for (int i = 0; i < messages; ++i) {
    batch.push_back(make_message("M" + std::to_string(1000 + i), {"a@example.org"},
                                 std::string(6000, static_cast<char>('a' + i % 26))));
  }
  ASSERT_TRUE(store->insert(batch));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Schema, ANewDatabaseIsWalWithTheCurrentVersion) {
  TempDirectory temp;
  fill_queue(temp.path(), 1);
  RawDatabase raw(temp.path() / "queue.db");
  EXPECT_EQ(raw.text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.text("PRAGMA user_version"), std::to_string(Store::schema_version));
  EXPECT_EQ(raw.text("PRAGMA application_id"), std::to_string(0x53545352));
  EXPECT_EQ(raw.text("SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE "
                     "type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name)"),
            "messages,recipients,recipients_due");
}

TEST(Schema, AnEmptyFileIsInitialised) {
  TempDirectory temp;
  write_file(temp.path() / "queue.db", "");
  auto store = Store::open(temp.path());
  ASSERT_TRUE(store) << store.error();
  EXPECT_TRUE(store->list());
}

TEST(Schema, ANewerVersionIsRefusedAndKept) {
  TempDirectory temp;
  fill_queue(temp.path(), 2);
  RawDatabase(temp.path() / "queue.db").execute("PRAGMA user_version = 7");
  const std::string before = read_file(temp.path() / "queue.db");

  auto store = Store::open(temp.path());
  ASSERT_FALSE(store);
  EXPECT_TRUE(contains(store.error(), "schema version 7")) << store.error();
  EXPECT_TRUE(contains(store.error(), "newer")) << store.error();
  EXPECT_TRUE(contains(store.error(), (temp.path() / "queue.db").string())) << store.error();

  EXPECT_TRUE(read_file(temp.path() / "queue.db") == before);
  RawDatabase raw(temp.path() / "queue.db");
  EXPECT_EQ(raw.text("PRAGMA user_version"), "7");
  EXPECT_EQ(raw.text("SELECT count(*) FROM messages"), "2");
}

struct ForeignCase {
  std::string name;
  std::string setup;
};

class ForeignDatabase : public ::testing::TestWithParam<ForeignCase> {};

TEST_P(ForeignDatabase, IsRefusedAndLeftAlone) {
  TempDirectory temp;
  {
    RawDatabase raw(temp.path() / "queue.db");
    raw.execute(GetParam().setup);
  }
  const std::string before = read_file(temp.path() / "queue.db");

  auto store = Store::open(temp.path());
  ASSERT_FALSE(store);
  EXPECT_TRUE(contains(store.error(), "did not create")) << store.error();
  EXPECT_TRUE(contains(store.error(), (temp.path() / "queue.db").string())) << store.error();
  EXPECT_TRUE(read_file(temp.path() / "queue.db") == before);  // not EXPECT_EQ: pages of bytes
}

INSTANTIATE_TEST_SUITE_P(
    Table, ForeignDatabase,
    ::testing::Values(ForeignCase{"TablesWithoutVersion",
                                  "CREATE TABLE notes (text TEXT); INSERT INTO notes "
                                  "VALUES ('mine');"},
                      ForeignCase{"OtherApplication", "PRAGMA application_id = 42;"},
                      ForeignCase{"VersionWithoutOurId",
                                  "PRAGMA user_version = 1; CREATE TABLE messages (x);"},
                      ForeignCase{"OnlyAView", "CREATE VIEW v AS SELECT 1;"}),
    [](const auto& info) { return info.param.name; });

TEST(Schema, AFileThatIsNotADatabaseIsRefusedAndKept) {
  TempDirectory temp;
  std::string garbage;
  for (int i = 0; i < 1000; ++i) {
    garbage += "this is not an SQLite database\n";
  }
  write_file(temp.path() / "queue.db", garbage);

  auto store = Store::open(temp.path());
  ASSERT_FALSE(store);
  EXPECT_TRUE(contains(store.error(), "corrupt")) << store.error();
  EXPECT_TRUE(contains(store.error(), (temp.path() / "queue.db").string())) << store.error();
  EXPECT_TRUE(read_file(temp.path() / "queue.db") == garbage);
}

TEST(Schema, DamagedPagesAreRefusedAndKept) {
  TempDirectory temp;
  fill_queue(temp.path(), 40);
  // Closing the last connection moved everything into the main file.
  ASSERT_FALSE(std::filesystem::exists(temp.path() / "queue.db-wal"));
  std::string bytes = read_file(temp.path() / "queue.db");
  constexpr std::size_t page_size = 4096;
  const std::size_t pages = bytes.size() / page_size;
  ASSERT_GT(pages, 20u);
  for (std::size_t page = pages / 2; page < pages / 2 + 3; ++page) {
    std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(page * page_size), page_size, '\xa5');
  }
  write_file(temp.path() / "queue.db", bytes);

  auto store = Store::open(temp.path());
  ASSERT_FALSE(store);
  EXPECT_TRUE(contains(store.error(), "corrupt")) << store.error();
  EXPECT_TRUE(contains(store.error(), (temp.path() / "queue.db").string())) << store.error();
  EXPECT_TRUE(read_file(temp.path() / "queue.db") == bytes);
}

TEST(Schema, RecipientsGoWithTheirMessage) {
  TempDirectory temp;
  {
    auto store = Store::open(temp.path());
    ASSERT_TRUE(store) << store.error();
    const std::vector<NewMessage> messages{make_message("A", {"a1@example.org", "a2@example.org"}),
                                           make_message("B", {"b@example.org"})};
    ASSERT_TRUE(store->insert(messages));
    ASSERT_EQ(store->remove("A"), Result<bool>(true));
    ASSERT_EQ(store->record_attempt("B", "b@example.org", RecipientStatus::sent, std::string_view(),
                                    std::nullopt),
              Result<bool>(true));
  }
  RawDatabase raw(temp.path() / "queue.db");
  EXPECT_EQ(raw.text("SELECT count(*) FROM messages"), "0");
  EXPECT_EQ(raw.text("SELECT count(*) FROM recipients"), "0");
}

TEST(Schema, AnUnusableDirectoryIsReported) {
  TempDirectory temp;
  write_file(temp.path() / "file", "x");
  auto store = Store::open(temp.path() / "file" / "spool");
  ASSERT_FALSE(store);
  EXPECT_TRUE(contains(store.error(), "queue directory")) << store.error();
}

}  // namespace
}  // namespace stsrelay::queue
