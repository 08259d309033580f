#include "queue/store.hpp"

#include <algorithm>
#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <gtest/gtest.h>

#include "tests/queue/fixtures.hpp"

namespace stsrelay::queue {
namespace {

using namespace std::string_literals;
using test_support::at_microseconds;
using test_support::list;
using test_support::make_message;
using test_support::open_store;
using test_support::TempDirectory;

std::vector<std::string> ids(const std::vector<MessageRecord>& records) {
  std::vector<std::string> result;
  for (const auto& record : records) {
    result.push_back(record.id);
  }
  return result;
}

TEST(RecipientStatus, NamesRoundTrip) {
  for (auto status : {RecipientStatus::queued, RecipientStatus::deferred, RecipientStatus::sent,
                      RecipientStatus::bounced}) {
    EXPECT_EQ(recipient_status_from_string(to_string(status)), status);
  }
  EXPECT_EQ(to_string(RecipientStatus::deferred), "deferred");
  EXPECT_EQ(recipient_status_from_string("Queued"), std::nullopt);
  EXPECT_EQ(recipient_status_from_string(""), std::nullopt);
}

TEST(Store, CreatesThePrivateDirectoryAndTheDatabase) {
  TempDirectory temp;
  const auto directory = temp.path() / "var" / "spool";
  Store store = open_store(directory);
  EXPECT_EQ(store.database_path(), directory / "queue.db");
  EXPECT_TRUE(std::filesystem::exists(directory / "queue.db"));
  struct stat info {};
  ASSERT_EQ(::stat(directory.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
}

TEST(Store, RoundTrip) {
  TempDirectory temp;
  Store store = open_store(temp.path());

  NewMessage message = make_message("01GA4GC208J0", {"first@example.org", "second@example.com"});
  message.arrival = at_microseconds(1'700'000'000'123'457);
  message.sender = "";  // the null reverse-path
  message.client_address = "::1";
  message.helo = "[IPv6:::1]";
  message.eight_bit_mime = true;
  message.smtputf8 = true;
  message.content = "Subject: b\xc3\xa4r\r\n\r\nNUL here: \0 and \xff\xfe\r\n"s;
  message.content += std::string(100'000, '\x80');
  ASSERT_TRUE(store.insert({&message, 1}));

  auto records = list(store);
  ASSERT_EQ(records.size(), 1u);
  const MessageRecord& record = records[0];
  EXPECT_EQ(record.id, message.id);
  EXPECT_EQ(record.sender, "");
  EXPECT_EQ(record.size, message.content.size());
  EXPECT_EQ(record.arrival, message.arrival);
  EXPECT_FALSE(record.held);
  EXPECT_EQ(record.client_address, "::1");
  EXPECT_EQ(record.helo, "[IPv6:::1]");
  EXPECT_TRUE(record.eight_bit_mime);
  EXPECT_TRUE(record.smtputf8);
  ASSERT_EQ(record.recipients.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(record.recipients[i].address, message.recipients[i]);
    EXPECT_EQ(record.recipients[i].status, RecipientStatus::queued);
    EXPECT_EQ(record.recipients[i].attempts, 0u);
    EXPECT_EQ(record.recipients[i].last_error, "");
    EXPECT_EQ(record.recipients[i].next_attempt, message.arrival);
  }

  auto content = store.content(message.id);
  ASSERT_TRUE(content);
  ASSERT_TRUE(content->has_value());
  EXPECT_TRUE(**content == message.content);  // not EXPECT_EQ: 100 kB of diff on failure

  EXPECT_EQ(store.set_held(message.id, true), Result<bool>(true));
  EXPECT_TRUE(list(store).at(0).held);
  EXPECT_EQ(store.set_held(message.id, true), Result<bool>(true));  // already held: still found
  EXPECT_EQ(store.set_held(message.id, false), Result<bool>(true));
  EXPECT_FALSE(list(store).at(0).held);

  EXPECT_EQ(store.remove(message.id), Result<bool>(true));
  EXPECT_TRUE(list(store).empty());
  EXPECT_EQ(store.content(message.id), Result<std::optional<std::string>>(std::nullopt));
  EXPECT_EQ(store.remove(message.id), Result<bool>(false));
}

TEST(Store, UnknownIdsAreNotFound) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  EXPECT_EQ(store.set_held("000000000000", true), Result<bool>(false));
  EXPECT_EQ(store.set_held("000000000000", false), Result<bool>(false));
  EXPECT_EQ(store.remove("000000000000"), Result<bool>(false));
  EXPECT_EQ(store.content("000000000000"), Result<std::optional<std::string>>(std::nullopt));
  EXPECT_EQ(store.record_attempt("000000000000", "a@example.org", RecipientStatus::sent, "", {}),
            Result<bool>(false));
}

TEST(Store, EmptyContentRoundTrips) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage message = make_message("A", {"a@example.org"}, "");
  ASSERT_TRUE(store.insert({&message, 1}));
  EXPECT_EQ(store.content("A"), Result<std::optional<std::string>>(std::string()));
  EXPECT_EQ(list(store).at(0).size, 0u);
}

TEST(Store, ListIsOrderedByIdWithRecipientsInTheirOriginalOrder) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const std::vector<NewMessage> messages{
      make_message("C", {"z@example.org", "a@example.org", "m@example.org"}),
      make_message("A", {"only@example.org"}),
      make_message("B", {"y@example.org", "b@example.org"}),
  };
  ASSERT_TRUE(store.insert(messages));

  const auto records = list(store);
  EXPECT_EQ(ids(records), (std::vector<std::string>{"A", "B", "C"}));
  for (const auto& record : records) {
    const auto original = std::find_if(messages.begin(), messages.end(),
                                       [&](const NewMessage& m) { return m.id == record.id; });
    ASSERT_NE(original, messages.end());
    std::vector<std::string> addresses;
    for (const auto& recipient : record.recipients) {
      addresses.push_back(recipient.address);
    }
    EXPECT_EQ(addresses, original->recipients) << record.id;
  }
}

TEST(Store, ABatchIsAllOrNothing) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const std::vector<NewMessage> first{make_message("A"), make_message("B")};
  ASSERT_TRUE(store.insert(first));

  const std::vector<NewMessage> second{make_message("C"), make_message("A"), make_message("D")};
  auto result = store.insert(second);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("message A"), std::string::npos) << result.error();
  EXPECT_EQ(ids(list(store)), (std::vector<std::string>{"A", "B"}));

  const std::vector<NewMessage> twice{make_message("E"), make_message("E")};
  EXPECT_FALSE(store.insert(twice));
  EXPECT_EQ(ids(list(store)), (std::vector<std::string>{"A", "B"}));
}

TEST(Store, RefusesMessagesWithoutIdOrRecipients) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const std::vector<NewMessage> no_recipients{make_message("A"), make_message("B", {})};
  auto result = store.insert(no_recipients);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().find("B"), std::string::npos) << result.error();
  const NewMessage no_id = make_message("");
  EXPECT_FALSE(store.insert({&no_id, 1}));
  EXPECT_TRUE(list(store).empty());
  EXPECT_TRUE(store.insert({}));
}

TEST(Store, ReopenKeepsEverything) {
  TempDirectory temp;
  std::vector<MessageRecord> before;
  {
    Store store = open_store(temp.path());
    const std::vector<NewMessage> messages{make_message("A", {"a@example.org", "b@example.org"}),
                                           make_message("B")};
    ASSERT_TRUE(store.insert(messages));
    ASSERT_EQ(store.set_held("B", true), Result<bool>(true));
    before = list(store);
  }
  Store store = open_store(temp.path());
  const auto after = list(store);
  ASSERT_EQ(ids(after), ids(before));
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].held, before[i].held);
    EXPECT_EQ(after[i].arrival, before[i].arrival);
    EXPECT_EQ(after[i].recipients.size(), before[i].recipients.size());
  }
  EXPECT_EQ(store.content("A"), Result<std::optional<std::string>>(make_message("A").content));
  EXPECT_EQ(store.last_id(), Result<std::optional<std::string>>(std::string("B")));
}

TEST(Store, LastIdIsTheGreatest) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  EXPECT_EQ(store.last_id(), Result<std::optional<std::string>>(std::nullopt));
  const std::vector<NewMessage> messages{make_message("01GA4GC208J1"), make_message("01GA4GC208J3"),
                                         make_message("01GA4GC208J2")};
  ASSERT_TRUE(store.insert(messages));
  EXPECT_EQ(store.last_id(), Result<std::optional<std::string>>(std::string("01GA4GC208J3")));
}

TEST(Store, CommittedMessagesSurviveInTheWalAlone) {
  // A copy of the files taken while the store is open is what a crash
  // leaves: the commits are in the WAL, not yet in the main file.
  TempDirectory temp;
  const auto live = temp.path() / "live";
  const auto crashed = temp.path() / "crashed";
  Store store = open_store(live);
  const std::vector<NewMessage> messages{make_message("A"), make_message("B")};
  ASSERT_TRUE(store.insert(messages));
  ASSERT_TRUE(std::filesystem::exists(live / "queue.db-wal"));
  std::filesystem::create_directories(crashed);
  std::filesystem::copy_file(live / "queue.db", crashed / "queue.db");
  std::filesystem::copy_file(live / "queue.db-wal", crashed / "queue.db-wal");

  Store recovered = open_store(crashed);
  EXPECT_EQ(ids(list(recovered)), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(recovered.content("B"), Result<std::optional<std::string>>(messages[1].content));
}

TEST(Store, ASecondStoreSeesTheFirstOnesCommits) {
  // The daemon's writer and a `stsrelay queue ...` command, each with its own
  // connection to the same database.
  TempDirectory temp;
  Store daemon = open_store(temp.path());
  Store command = open_store(temp.path());

  const std::vector<NewMessage> messages{make_message("A"), make_message("B")};
  ASSERT_TRUE(daemon.insert(messages));
  EXPECT_EQ(ids(list(command)), (std::vector<std::string>{"A", "B"}));

  EXPECT_EQ(command.set_held("A", true), Result<bool>(true));
  EXPECT_TRUE(list(daemon).at(0).held);
  EXPECT_EQ(command.remove("B"), Result<bool>(true));
  EXPECT_EQ(daemon.content("B"), Result<std::optional<std::string>>(std::nullopt));

  const NewMessage more = make_message("C");
  ASSERT_TRUE(daemon.insert({&more, 1}));
  EXPECT_EQ(ids(list(command)), (std::vector<std::string>{"A", "C"}));
}

TEST(Store, DueRecipientsAreTheUnheldQueuedOrDeferredOnesWhoseTimeHasCome) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  NewMessage early = make_message("A", {"a1@example.org", "a2@example.org"});
  early.arrival = at_microseconds(1'000);
  early.eight_bit_mime = true;
  NewMessage late = make_message("B", {"b1@example.org"});
  late.arrival = at_microseconds(2'000);
  late.sender = "";
  NewMessage held = make_message("C", {"c1@example.org"});
  held.arrival = at_microseconds(500);
  ASSERT_TRUE(store.insert(std::vector<NewMessage>{early, late, held}));
  ASSERT_EQ(store.set_held("C", true), Result<bool>(true));

  auto due = store.due_recipients(at_microseconds(999), 100);
  ASSERT_TRUE(due);
  EXPECT_TRUE(due->empty());

  due = store.due_recipients(at_microseconds(1'000), 100);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].message_id, "A");
  EXPECT_EQ((*due)[0].address, "a1@example.org");
  EXPECT_EQ((*due)[1].address, "a2@example.org");
  EXPECT_EQ((*due)[0].status, RecipientStatus::queued);
  EXPECT_EQ((*due)[0].attempts, 0u);
  EXPECT_EQ((*due)[0].next_attempt, at_microseconds(1'000));
  EXPECT_EQ((*due)[0].arrival, at_microseconds(1'000));
  EXPECT_EQ((*due)[0].sender, early.sender);
  EXPECT_TRUE((*due)[0].eight_bit_mime);
  EXPECT_FALSE((*due)[0].smtputf8);

  due = store.due_recipients(at_microseconds(5'000), 1);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].address, "a1@example.org");

  // a1 deferred to 10'000: now B's recipient comes before it.
  EXPECT_EQ(store.record_attempt("A", "a1@example.org", RecipientStatus::deferred, "451 4.3.0 busy",
                                 at_microseconds(10'000)),
            Result<bool>(true));
  due = store.due_recipients(at_microseconds(5'000), 100);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].address, "a2@example.org");
  EXPECT_EQ((*due)[1].address, "b1@example.org");
  EXPECT_EQ((*due)[1].sender, "");

  due = store.due_recipients(at_microseconds(10'000), 100);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 3u);
  EXPECT_EQ((*due)[2].address, "a1@example.org");
  EXPECT_EQ((*due)[2].status, RecipientStatus::deferred);
  EXPECT_EQ((*due)[2].attempts, 1u);

  const auto records = list(store);
  const RecipientRecord& a1 = records.at(0).recipients.at(0);
  EXPECT_EQ(a1.status, RecipientStatus::deferred);
  EXPECT_EQ(a1.attempts, 1u);
  EXPECT_EQ(a1.last_error, "451 4.3.0 busy");
  EXPECT_EQ(a1.next_attempt, at_microseconds(10'000));

  // Released, the held message is due again.
  ASSERT_EQ(store.set_held("C", false), Result<bool>(true));
  due = store.due_recipients(at_microseconds(10'000), 100);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->size(), 4u);
  EXPECT_EQ(due->at(0).message_id, "C");
}

// Queued and deferred recipients are read as two runs, each in time order,
// and merged: the limit applies to the merged order, ties go by message id
// then RCPT order, and held messages are skipped wherever they fall.
TEST(Store, DueRecipientsMergeQueuedAndDeferredInTimeOrderUnderTheLimit) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  std::vector<NewMessage> messages;
  for (int i = 0; i < 8; ++i) {
    NewMessage message = make_message("M" + std::to_string(i), {"x@example.org", "y@example.org"});
    message.arrival = at_microseconds(1'000 + 100 * i);
    messages.push_back(std::move(message));
  }
  ASSERT_TRUE(store.insert(messages));
  // Odd messages' first recipients deferred to times that fall between the
  // queued ones; M1's ties with M2's arrival.
  for (int i = 1; i < 8; i += 2) {
    ASSERT_EQ(
        store.record_attempt("M" + std::to_string(i), "x@example.org", RecipientStatus::deferred,
                             "451 busy", at_microseconds(1'000 + 100 * i + 50 * (i == 1 ? 2 : 1))),
        Result<bool>(true));
  }
  ASSERT_EQ(store.set_held("M4", true), Result<bool>(true));
  ASSERT_EQ(store.set_held("M5", true), Result<bool>(true));

  std::vector<std::string> expected{
      "M0 x", "M0 y", "M1 y",          // 1000, 1000, 1100
      "M1 x", "M2 x", "M2 y",          // 1200 deferred, then M2's queued at 1200
      "M3 y", "M3 x",                  // 1300, 1350 deferred
      "M6 x", "M6 y", "M7 y", "M7 x",  // M4, M5 held
  };
  auto due = store.due_recipients(at_microseconds(10'000), 100);
  ASSERT_TRUE(due);
  std::vector<std::string> got;
  for (const auto& recipient : *due) {
    got.push_back(recipient.message_id + " " + recipient.address.substr(0, 1));
  }
  EXPECT_EQ(got, expected);

  for (std::size_t limit : {1u, 3u, 4u, 7u}) {
    due = store.due_recipients(at_microseconds(10'000), limit);
    ASSERT_TRUE(due);
    got.clear();
    for (const auto& recipient : *due) {
      got.push_back(recipient.message_id + " " + recipient.address.substr(0, 1));
    }
    EXPECT_EQ(got, std::vector<std::string>(expected.begin(), expected.begin() + limit))
        << "limit " << limit;
  }
  // Only what is due by then.
  due = store.due_recipients(at_microseconds(1'200), 100);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->size(), 6u);
  EXPECT_EQ(due->back().status, RecipientStatus::queued);
  EXPECT_EQ(due->at(3).status, RecipientStatus::deferred);
}

TEST(Store, AMessageLeavesTheQueueWhenEveryRecipientIsSentOrBounced) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage message = make_message("A", {"a1@example.org", "a2@example.org"});
  ASSERT_TRUE(store.insert({&message, 1}));

  EXPECT_EQ(store.record_attempt("A", "a1@example.org", RecipientStatus::sent, "250 ok", {}),
            Result<bool>(true));
  auto records = list(store);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].recipients[0].status, RecipientStatus::sent);
  EXPECT_EQ(records[0].recipients[0].attempts, 1u);
  EXPECT_EQ(records[0].recipients[0].next_attempt, std::nullopt);
  auto due = store.due_recipients(at_microseconds(4'000'000'000'000'000), 100);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ(due->at(0).address, "a2@example.org");

  EXPECT_EQ(store.record_attempt("A", "a2@example.org", RecipientStatus::bounced,
                                 "550 5.1.1 no such user", at_microseconds(1)),
            Result<bool>(true));
  EXPECT_TRUE(list(store).empty());
  EXPECT_EQ(store.content("A"), Result<std::optional<std::string>>(std::nullopt));
  EXPECT_EQ(store.record_attempt("A", "a2@example.org", RecipientStatus::sent, "", {}),
            Result<bool>(false));
}

TEST(Store, RecordAttemptNeedsANextAttemptForQueuedOrDeferred) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage message = make_message("A");
  ASSERT_TRUE(store.insert({&message, 1}));
  EXPECT_FALSE(store.record_attempt("A", message.recipients[0], RecipientStatus::deferred, "", {}));
  EXPECT_FALSE(store.record_attempt("A", message.recipients[0], RecipientStatus::queued, "", {}));
  EXPECT_EQ(list(store).at(0).recipients.at(0).attempts, 0u);
  EXPECT_EQ(store.record_attempt("A", "other@example.org", RecipientStatus::sent, "", {}),
            Result<bool>(false));
  EXPECT_EQ(list(store).size(), 1u);
}

}  // namespace
}  // namespace stsrelay::queue
