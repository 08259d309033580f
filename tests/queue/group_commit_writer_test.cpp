#include "queue/group_commit_writer.hpp"

#include <atomic>
#include <future>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/queue/fixtures.hpp"

namespace stsrelay::queue {
namespace {

using test_support::make_message;
using test_support::open_store;
using test_support::TempDirectory;

// Holds the writer thread inside a completion until released, so that the
// test knows which submissions are pending together. Released on destruction
// too, so a failing test cannot hang.
class Gate {
 public:
  ~Gate() { open(); }
  void wait() { opened_.wait(); }
  void open() {
    if (!is_open_.exchange(true)) {
      promise_.set_value();
    }
  }

 private:
  std::promise<void> promise_;
  std::shared_future<void> opened_ = promise_.get_future().share();
  std::atomic<bool> is_open_{false};
};

struct Outcome {
  int calls = 0;
  bool ok = false;
  bool visible = false;  // committed: another connection saw it in the completion
  std::string error;
};

TEST(GroupCommitWriter, EveryCompletionRunsOnceAfterItsCommit) {
  TempDirectory temp;
  Store observer = open_store(temp.path());  // only used on the writer thread until stop()
  GroupCommitWriter writer(open_store(temp.path()));

  constexpr int threads = 8;
  constexpr int per_thread = 50;
  std::mutex mutex;
  std::map<std::string, Outcome> outcomes;
  std::latch all_done(threads * per_thread);

  std::vector<std::thread> submitters;
  for (int t = 0; t < threads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        std::string id = "T" + std::to_string(t) + "-" + std::to_string(1000 + i);
        writer.submit(make_message(id), [&, id](Result<void> result) {
          const auto content = observer.content(id);
          std::lock_guard lock(mutex);
          Outcome& outcome = outcomes[id];
          ++outcome.calls;
          outcome.ok = result.has_value();
          outcome.visible = content && content->has_value();
          all_done.count_down();
        });
      }
    });
  }
  for (auto& submitter : submitters) {
    submitter.join();
  }
  all_done.wait();

  std::lock_guard lock(mutex);
  ASSERT_EQ(outcomes.size(), static_cast<std::size_t>(threads * per_thread));
  for (const auto& [id, outcome] : outcomes) {
    EXPECT_EQ(outcome.calls, 1) << id;
    EXPECT_TRUE(outcome.ok) << id;
    EXPECT_TRUE(outcome.visible) << id;
  }
  EXPECT_EQ(writer.stats().messages, static_cast<std::uint64_t>(threads * per_thread));
  EXPECT_GE(writer.stats().commits, 1u);
}

TEST(GroupCommitWriter, SubmissionsDuringACommitShareTheNextOne) {
  TempDirectory temp;
  constexpr std::size_t max_batch = 64;
  GroupCommitWriter writer(open_store(temp.path()), max_batch);
  Gate gate;
  constexpr int threads = 4;
  constexpr int per_thread = 50;
  constexpr int messages = 1 + threads * per_thread;
  std::latch all_done(messages);
  std::atomic<int> failures{0};
  auto done = [&](Result<void> result) {
    failures += result ? 0 : 1;
    all_done.count_down();
  };

  // The first commit's completion holds the writer until all the others are
  // pending, as if that commit were slow.
  writer.submit(make_message("A"), [&](Result<void> result) {
    gate.wait();
    done(std::move(result));
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < threads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        writer.submit(make_message("B" + std::to_string(t * 1000 + i)), done);
      }
    });
  }
  for (auto& submitter : submitters) {
    submitter.join();
  }
  gate.open();
  all_done.wait();

  EXPECT_EQ(failures.load(), 0);
  const auto stats = writer.stats();
  EXPECT_EQ(stats.messages, static_cast<std::uint64_t>(messages));
  // The first commit (A, maybe with a few others), then full batches.
  EXPECT_LE(stats.commits, 1u + (messages - 1 + max_batch - 1) / max_batch);
}

TEST(GroupCommitWriter, StopCommitsEverythingPending) {
  TempDirectory temp;
  std::vector<std::string> ids;
  std::atomic<int> succeeded{0};
  std::atomic<int> calls{0};
  {
    GroupCommitWriter writer(open_store(temp.path()));
    Gate gate;
    auto done = [&](Result<void> result) {
      ++calls;
      succeeded += result ? 1 : 0;
    };
    writer.submit(make_message("A"), [&](Result<void> result) {
      gate.wait();
      done(std::move(result));
    });
    for (int i = 0; i < 50; ++i) {
      ids.push_back("B" + std::to_string(100 + i));
      writer.submit(make_message(ids.back()), done);
    }
    gate.open();
    writer.stop();
    EXPECT_EQ(calls.load(), 51);
    EXPECT_EQ(succeeded.load(), 51);
    writer.stop();  // idempotent
  }
  Store store = open_store(temp.path());
  auto records = store.list();
  ASSERT_TRUE(records);
  EXPECT_EQ(records->size(), 51u);
}

TEST(GroupCommitWriter, TheDestructorStopsAndDrains) {
  TempDirectory temp;
  std::atomic<int> succeeded{0};
  {
    GroupCommitWriter writer(open_store(temp.path()));
    for (int i = 0; i < 20; ++i) {
      writer.submit(make_message("M" + std::to_string(100 + i)),
                    [&](Result<void> result) { succeeded += result ? 1 : 0; });
    }
  }
  EXPECT_EQ(succeeded.load(), 20);
  Store store = open_store(temp.path());
  EXPECT_EQ(store.list()->size(), 20u);
}

TEST(GroupCommitWriter, SubmitAfterStopFailsAtOnce) {
  TempDirectory temp;
  GroupCommitWriter writer(open_store(temp.path()));
  writer.stop();
  std::optional<Result<void>> outcome;
  writer.submit(make_message("LATE"), [&](Result<void> result) { outcome = std::move(result); });
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->has_value());
  EXPECT_NE(outcome->error().find("stopped"), std::string::npos) << outcome->error();
  EXPECT_NE(outcome->error().find("LATE"), std::string::npos) << outcome->error();
  Store store = open_store(temp.path());
  EXPECT_TRUE(store.list()->empty());
}

TEST(GroupCommitWriter, ABadMessageFailsAloneInItsBatch) {
  TempDirectory temp;
  GroupCommitWriter writer(open_store(temp.path()));
  Gate gate;
  std::mutex mutex;
  std::map<std::string, std::vector<bool>> outcomes;  // per submission, by its label
  std::latch all_done(7);
  auto record = [&](std::string label) {
    return [&, label](Result<void> result) {
      {
        std::lock_guard lock(mutex);
        outcomes[label].push_back(result.has_value());
      }
      all_done.count_down();
    };
  };

  writer.submit(make_message("X"), [&, done = record("X")](Result<void> result) {
    gate.wait();
    done(std::move(result));
  });
  // All of these are pending together, so they are tried as one batch.
  writer.submit(make_message("M1"), record("M1"));
  writer.submit(make_message("X"), record("X again"));
  writer.submit(make_message("M2"), record("M2"));
  writer.submit(make_message("M3", {}), record("M3 without recipients"));
  writer.submit(make_message("M4"), record("M4"));
  writer.submit(make_message("M4"), record("M4 again"));
  gate.open();
  all_done.wait();

  std::lock_guard lock(mutex);
  const std::map<std::string, std::vector<bool>> expected{
      {"X", {true}},         {"M1", {true}}, {"X again", {false}},
      {"M2", {true}},        {"M4", {true}}, {"M3 without recipients", {false}},
      {"M4 again", {false}},
  };
  EXPECT_EQ(outcomes, expected);
  writer.stop();
  Store store = open_store(temp.path());
  auto records = store.list();
  ASSERT_TRUE(records);
  EXPECT_EQ(records->size(), 4u);  // X, M1, M2, M4
  EXPECT_EQ(writer.stats().messages, 4u);
}

AttemptRecord finished(std::string id, std::string address) {
  return AttemptRecord{std::move(id), std::move(address), RecipientStatus::sent, "250 ok",
                       std::nullopt};
}

TEST(GroupCommitWriter, MixedWritesShareACommitInTheOrderSubmitted) {
  TempDirectory temp;
  {
    Store store = open_store(temp.path());
    const NewMessage original = make_message("ORIG", {"gone@example.org", "ok@example.org"});
    ASSERT_TRUE(store.insert({&original, 1}));
  }
  GroupCommitWriter writer(open_store(temp.path()));
  Gate gate;
  std::latch all_done(5);
  std::atomic<int> failures{0};
  auto done = [&](Result<void> result) {
    failures += result ? 0 : 1;
    all_done.count_down();
  };
  writer.submit(make_message("FIRST"), [&](Result<void> result) {
    gate.wait();
    done(std::move(result));
  });
  // Pending together: one transaction, in this order.
  NewMessage bounce = make_message("BOUNCE", {"sender@example.net"});
  bounce.sender = "";
  writer.submit(QueueWrite(std::move(bounce)), done);
  writer.submit(QueueWrite(AttemptRecord{"ORIG", "gone@example.org", RecipientStatus::bounced,
                                         "550 5.1.1 no such user", std::nullopt}),
                done);
  writer.submit(QueueWrite(finished("ORIG", "ok@example.org")), done);
  // Its message was deleted meanwhile: skipped, and still a success.
  writer.submit(QueueWrite(finished("DELETED", "x@example.org")), done);
  gate.open();
  all_done.wait();
  writer.stop();

  EXPECT_EQ(failures.load(), 0);
  const auto stats = writer.stats();
  EXPECT_LE(stats.commits, 2u);  // FIRST alone, or with some of the others
  EXPECT_EQ(stats.messages, 2u);
  EXPECT_EQ(stats.attempts, 3u);
  Store store = open_store(temp.path());
  auto records = store.list();
  ASSERT_TRUE(records);
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ(records->at(0).id, "BOUNCE");
  EXPECT_EQ(records->at(1).id, "FIRST");
}

// The daemon's `stopped` line divides messages by message_commits: a commit
// counts for messages and for attempts when it holds both.
TEST(GroupCommitWriter, StatsCountCommitsThatHeldMessagesAndThoseThatHeldAttempts) {
  TempDirectory temp;
  {
    Store store = open_store(temp.path());
    const NewMessage original = make_message("ORIG", {"a@example.org", "b@example.org"});
    ASSERT_TRUE(store.insert({&original, 1}));
  }
  GroupCommitWriter writer(open_store(temp.path()));
  auto wait_for = [&](auto submit) {
    std::promise<bool> committed;
    submit([&](Result<void> result) { committed.set_value(result.has_value()); });
    return committed.get_future().get();
  };
  EXPECT_TRUE(wait_for([&](auto done) { writer.submit(make_message("M1"), done); }));
  EXPECT_TRUE(wait_for(
      [&](auto done) { writer.submit(QueueWrite(finished("ORIG", "a@example.org")), done); }));
  EXPECT_TRUE(wait_for([&](auto done) {
    std::vector<QueueWrite> writes;
    writes.emplace_back(make_message("M2"));
    writes.emplace_back(make_message("M3"));
    writes.emplace_back(finished("ORIG", "b@example.org"));
    writer.submit_together(std::move(writes), done);
  }));
  writer.stop();
  const auto stats = writer.stats();
  EXPECT_EQ(stats.commits, 3u);
  EXPECT_EQ(stats.messages, 3u);
  EXPECT_EQ(stats.message_commits, 2u);
  EXPECT_EQ(stats.attempts, 2u);
  EXPECT_EQ(stats.attempt_commits, 2u);
}

TEST(GroupCommitWriter, WritesSubmittedTogetherStandOrFallTogether) {
  TempDirectory temp;
  {
    Store store = open_store(temp.path());
    const std::vector<NewMessage> originals{make_message("O1", {"a@example.org"}),
                                            make_message("O2", {"b@example.org"})};
    ASSERT_TRUE(store.insert(originals));
  }
  GroupCommitWriter writer(open_store(temp.path()));
  Gate gate;
  std::mutex mutex;
  std::map<std::string, bool> outcomes;
  std::latch all_done(4);
  auto record = [&](std::string label) {
    return [&, label](Result<void> result) {
      {
        std::lock_guard lock(mutex);
        outcomes[label] = result.has_value();
      }
      all_done.count_down();
    };
  };
  writer.submit(make_message("FIRST"), [&, done = record("first")](Result<void> result) {
    gate.wait();
    done(std::move(result));
  });
  // A bounce whose attempt record is invalid (deferred without a next
  // attempt): neither may be committed, and the batch fails because of it.
  std::vector<QueueWrite> broken;
  broken.emplace_back(make_message("B1", {"sender@example.net"}));
  broken.emplace_back(
      AttemptRecord{"O1", "a@example.org", RecipientStatus::deferred, "451", std::nullopt});
  writer.submit_together(std::move(broken), record("broken"));
  std::vector<QueueWrite> good;
  good.emplace_back(make_message("B2", {"sender@example.net"}));
  good.emplace_back(finished("O2", "b@example.org"));
  writer.submit_together(std::move(good), record("good"));
  writer.submit(make_message("LAST"), record("last"));
  gate.open();
  all_done.wait();
  writer.stop();

  const std::map<std::string, bool> expected{
      {"first", true}, {"broken", false}, {"good", true}, {"last", true}};
  EXPECT_EQ(outcomes, expected);
  Store store = open_store(temp.path());
  auto records = store.list();
  ASSERT_TRUE(records);
  std::vector<std::string> ids;
  for (const auto& message : *records) {
    ids.push_back(message.id);
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"B2", "FIRST", "LAST", "O1"}));
  EXPECT_EQ(records->back().recipients.at(0).attempts, 0u);  // O1 untouched
}

TEST(GroupCommitWriter, ConcurrentDeliveriesAndArrivals) {
  TempDirectory temp;
  GroupCommitWriter writer(open_store(temp.path()), 16);
  constexpr int threads = 6;
  constexpr int per_thread = 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = "M" + std::to_string(t) + "-" + std::to_string(1000 + i);
        std::promise<Result<void>> queued;
        writer.submit(make_message(id, {"a@example.org", "b@example.org"}),
                      [&](Result<void> result) { queued.set_value(std::move(result)); });
        if (!queued.get_future().get()) {
          ++failures;
          continue;
        }
        // Both outcomes of one delivery, each its own submission.
        std::promise<void> first_done;
        std::promise<void> second_done;
        writer.submit(QueueWrite(finished(id, "a@example.org")), [&](Result<void> result) {
          failures += result ? 0 : 1;
          first_done.set_value();
        });
        writer.submit(QueueWrite(finished(id, "b@example.org")), [&](Result<void> result) {
          failures += result ? 0 : 1;
          second_done.set_value();
        });
        first_done.get_future().wait();
        second_done.get_future().wait();
      }
    });
  }
  for (auto& worker : workers) {
    worker.join();
  }
  writer.stop();
  EXPECT_EQ(failures.load(), 0);
  const auto stats = writer.stats();
  EXPECT_EQ(stats.messages, static_cast<std::uint64_t>(threads * per_thread));
  EXPECT_EQ(stats.attempts, static_cast<std::uint64_t>(2 * threads * per_thread));
  Store store = open_store(temp.path());
  auto records = store.list();
  ASSERT_TRUE(records);
  EXPECT_TRUE(records->empty());  // every message finished and removed
}

TEST(GroupCommitWriter, AnAttemptSubmittedAfterStopFailsAtOnce) {
  TempDirectory temp;
  GroupCommitWriter writer(open_store(temp.path()));
  writer.stop();
  std::optional<Result<void>> outcome;
  writer.submit(QueueWrite(finished("LATE", "x@example.org")),
                [&](Result<void> result) { outcome = std::move(result); });
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->has_value());
  EXPECT_NE(outcome->error().find("x@example.org"), std::string::npos) << outcome->error();
  EXPECT_NE(outcome->error().find("stopped"), std::string::npos) << outcome->error();
}

}  // namespace
}  // namespace stsrelay::queue
