#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "queue/queue_write.hpp"
#include "queue/store.hpp"
#include "tests/queue/fixtures.hpp"

namespace stsrelay::queue {
namespace {

using test_support::at_microseconds;
using test_support::list;
using test_support::make_message;
using test_support::open_store;
using test_support::TempDirectory;

AttemptRecord attempt(std::string id, std::string address, RecipientStatus status,
                      std::string last_error = "",
                      std::optional<TimePoint> next_attempt = std::nullopt) {
  return AttemptRecord{std::move(id), std::move(address), status, std::move(last_error),
                       next_attempt};
}

TEST(StoreApply, NothingToApplyIsSuccess) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  EXPECT_TRUE(store.apply({}));
  EXPECT_TRUE(list(store).empty());
}

TEST(StoreApply, AMixedBatchIsAppliedInOrder) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const std::vector<QueueWrite> first{make_message("A", {"a1@example.org", "a2@example.org"}),
                                      make_message("B", {"b1@example.org"})};
  ASSERT_TRUE(store.apply(first));

  // A write may concern a message inserted earlier in the same batch.
  const std::vector<QueueWrite> second{
      attempt("A", "a1@example.org", RecipientStatus::sent, "250 2.0.0 ok"),
      make_message("C", {"c1@example.org"}),
      attempt("C", "c1@example.org", RecipientStatus::deferred, "451 4.3.0 later",
              at_microseconds(9'000)),
      attempt("B", "b1@example.org", RecipientStatus::sent, "250 ok"),
  };
  ASSERT_TRUE(store.apply(second));

  const auto records = list(store);
  ASSERT_EQ(records.size(), 2u);  // B is finished and gone
  EXPECT_EQ(records[0].id, "A");
  EXPECT_EQ(records[0].recipients[0].status, RecipientStatus::sent);
  EXPECT_EQ(records[0].recipients[0].attempts, 1u);
  EXPECT_EQ(records[0].recipients[0].last_error, "250 2.0.0 ok");
  EXPECT_EQ(records[0].recipients[1].status, RecipientStatus::queued);
  EXPECT_EQ(records[1].id, "C");
  EXPECT_EQ(records[1].recipients[0].status, RecipientStatus::deferred);
  EXPECT_EQ(records[1].recipients[0].next_attempt, at_microseconds(9'000));
  EXPECT_EQ(records[1].recipients[0].attempts, 1u);
}

TEST(StoreApply, ABounceIsQueuedInTheTransactionThatRemovesTheOriginal) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage original = make_message("A", {"gone@example.org"});
  ASSERT_TRUE(store.insert({&original, 1}));

  NewMessage bounce = make_message("B", {original.sender}, "Subject: bounce\r\n\r\nsorry\r\n");
  bounce.sender = "";
  const std::vector<QueueWrite> writes{
      bounce, attempt("A", "gone@example.org", RecipientStatus::bounced, "550 5.1.1 no such user")};
  ASSERT_TRUE(store.apply(writes));

  const auto records = list(store);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].id, "B");
  EXPECT_EQ(records[0].sender, "");
  EXPECT_EQ(store.content("A"), Result<std::optional<std::string>>(std::nullopt));
}

TEST(StoreApply, AttemptsForVanishedRecipientsAreSkipped) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const std::vector<NewMessage> messages{make_message("A", {"a1@example.org"}),
                                         make_message("B", {"b1@example.org", "b2@example.org"})};
  ASSERT_TRUE(store.insert(messages));
  ASSERT_EQ(store.remove("A"), Result<bool>(true));  // `queue delete` during the attempt

  const std::vector<QueueWrite> writes{
      attempt("A", "a1@example.org", RecipientStatus::sent),
      attempt("B", "nobody@example.org", RecipientStatus::bounced, "550 no"),
      attempt("B", "b1@example.org", RecipientStatus::sent),
      attempt("B", "b2@example.org", RecipientStatus::sent),
      // B was finished by the write before: this one finds nothing either.
      attempt("B", "b2@example.org", RecipientStatus::sent),
  };
  ASSERT_TRUE(store.apply(writes));
  EXPECT_TRUE(list(store).empty());
}

TEST(StoreApply, OneBadWriteFailsTheWholeBatch) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage existing = make_message("A");
  ASSERT_TRUE(store.insert({&existing, 1}));

  const std::vector<std::vector<QueueWrite>> bad_batches{
      {make_message("B"), make_message("A")},      // duplicate id
      {make_message("B"), make_message("C", {})},  // no recipients
      {make_message("B"), make_message("")},       // no id
      {attempt("A", existing.recipients[0], RecipientStatus::sent), make_message("B"),
       attempt("A", existing.recipients[0], RecipientStatus::deferred)},  // no next attempt
  };
  for (const auto& batch : bad_batches) {
    EXPECT_FALSE(store.apply(batch));
    const auto records = list(store);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].id, "A");
    EXPECT_EQ(records[0].recipients[0].attempts, 0u);
  }
}

TEST(StoreApply, RecordAttemptAndInsertKeepTheirMeaning) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage message = make_message("A", {"a1@example.org", "a1@example.org"});
  ASSERT_TRUE(store.insert({&message, 1}));
  // Every recipient with that address (RCPT TO given twice) is updated.
  EXPECT_EQ(store.record_attempt("A", "a1@example.org", RecipientStatus::deferred, "421 busy",
                                 at_microseconds(5)),
            Result<bool>(true));
  const auto records = list(store);
  ASSERT_EQ(records.size(), 1u);
  for (const auto& recipient : records[0].recipients) {
    EXPECT_EQ(recipient.status, RecipientStatus::deferred);
    EXPECT_EQ(recipient.attempts, 1u);
  }
}

TEST(StoreMessage, ReturnsTheEnvelopeAndRecipientsWithoutContent) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  NewMessage message = make_message("A", {"z@example.org", "a@example.org"});
  message.eight_bit_mime = true;
  message.smtputf8 = true;
  ASSERT_TRUE(store.insert({&message, 1}));
  ASSERT_TRUE(store.record_attempt("A", "z@example.org", RecipientStatus::deferred, "451 later",
                                   at_microseconds(77)));

  auto record = store.message("A");
  ASSERT_TRUE(record);
  ASSERT_TRUE(record->has_value());
  const MessageRecord& found = **record;
  EXPECT_EQ(found.id, "A");
  EXPECT_EQ(found.sender, message.sender);
  EXPECT_EQ(found.size, message.content.size());
  EXPECT_EQ(found.arrival, message.arrival);
  EXPECT_FALSE(found.held);
  EXPECT_EQ(found.client_address, message.client_address);
  EXPECT_EQ(found.helo, message.helo);
  EXPECT_TRUE(found.eight_bit_mime);
  EXPECT_TRUE(found.smtputf8);
  ASSERT_EQ(found.recipients.size(), 2u);
  EXPECT_EQ(found.recipients[0].address, "z@example.org");  // RCPT order, not sorted
  EXPECT_EQ(found.recipients[0].status, RecipientStatus::deferred);
  EXPECT_EQ(found.recipients[0].last_error, "451 later");
  EXPECT_EQ(found.recipients[0].next_attempt, at_microseconds(77));
  EXPECT_EQ(found.recipients[1].address, "a@example.org");
  EXPECT_EQ(found.recipients[1].status, RecipientStatus::queued);

  auto missing = store.message("NOPE");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());
}

TEST(StoreDue, DueRecipientsCarryTheMessageSize) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  const NewMessage message = make_message("A", {"a@example.org"}, std::string(1234, 'x'));
  ASSERT_TRUE(store.insert({&message, 1}));
  auto due = store.due_recipients(message.arrival, 10);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ(due->at(0).size, 1234u);
}

TEST(StoreDue, NextDueIsTheEarliestWaitingUnheldRecipient) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  auto next = store.next_due();
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, std::nullopt);

  NewMessage a = make_message("A", {"a1@example.org", "a2@example.org"});
  a.arrival = at_microseconds(1'000);
  NewMessage b = make_message("B", {"b1@example.org"});
  b.arrival = at_microseconds(500);
  ASSERT_TRUE(store.insert(std::vector<NewMessage>{a, b}));
  EXPECT_EQ(store.next_due(), Result<std::optional<TimePoint>>(at_microseconds(500)));

  ASSERT_EQ(store.set_held("B", true), Result<bool>(true));
  EXPECT_EQ(store.next_due(), Result<std::optional<TimePoint>>(at_microseconds(1'000)));

  ASSERT_TRUE(store.record_attempt("A", "a1@example.org", RecipientStatus::deferred, "",
                                   at_microseconds(3'000)));
  ASSERT_TRUE(store.record_attempt("A", "a2@example.org", RecipientStatus::sent, "", {}));
  EXPECT_EQ(store.next_due(), Result<std::optional<TimePoint>>(at_microseconds(3'000)));

  ASSERT_TRUE(store.record_attempt("A", "a1@example.org", RecipientStatus::sent, "", {}));
  EXPECT_EQ(store.next_due(), Result<std::optional<TimePoint>>(std::nullopt));  // B is held
}

TEST(StoreDue, MakeDueBringsWaitingRecipientsForwardButNotHeldOnes) {
  TempDirectory temp;
  Store store = open_store(temp.path());
  NewMessage a = make_message("A", {"a1@example.org", "a2@example.org", "a3@example.org"});
  a.arrival = at_microseconds(1'000);
  NewMessage held = make_message("H", {"h1@example.org"});
  held.arrival = at_microseconds(1'000);
  ASSERT_TRUE(store.insert(std::vector<NewMessage>{a, held}));
  ASSERT_TRUE(store.record_attempt("H", "h1@example.org", RecipientStatus::deferred, "",
                                   at_microseconds(90'000)));
  ASSERT_EQ(store.set_held("H", true), Result<bool>(true));
  ASSERT_TRUE(store.record_attempt("A", "a1@example.org", RecipientStatus::deferred, "",
                                   at_microseconds(50'000)));
  ASSERT_TRUE(store.record_attempt("A", "a2@example.org", RecipientStatus::sent, "", {}));

  // a1 moves to now; a3 (due since 1'000) keeps its earlier time; a2 is done.
  EXPECT_EQ(store.make_due(at_microseconds(2'000)), Result<std::size_t>(1u));
  auto due = store.due_recipients(at_microseconds(2'000), 10);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ(due->at(0).address, "a3@example.org");
  EXPECT_EQ(due->at(0).next_attempt, at_microseconds(1'000));
  EXPECT_EQ(due->at(1).address, "a1@example.org");
  EXPECT_EQ(due->at(1).next_attempt, at_microseconds(2'000));

  const auto h = store.message("H");
  ASSERT_TRUE(h && h->has_value());
  EXPECT_EQ((*h)->recipients[0].next_attempt, at_microseconds(90'000));
}

}  // namespace
}  // namespace stsrelay::queue
