#include "queue/queue_id.hpp"

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::queue {
namespace {

using std::chrono::microseconds;
using std::chrono::system_clock;

system_clock::time_point at_microseconds(std::int64_t value) {
  return system_clock::time_point(
      std::chrono::duration_cast<system_clock::duration>(microseconds(value)));
}

QueueIdGenerator::Clock fixed_clock(std::int64_t value) {
  return [value] { return at_microseconds(value); };
}

TEST(QueueIdGenerator, EncodesArrivalMicrosecondsAsTwelveCrockfordDigits) {
  QueueIdGenerator generator(std::nullopt, fixed_clock(1'700'000'000'123'456));
  const std::string id = generator.next();
  EXPECT_EQ(id, "01GA4GC208J0");
  EXPECT_EQ(id.size(), QueueIdGenerator::length);
  EXPECT_TRUE(QueueIdGenerator::is_valid(id));
}

TEST(QueueIdGenerator, RealClockIdsAreValid) {
  QueueIdGenerator generator;
  for (int i = 0; i < 100; ++i) {
    const std::string id = generator.next();
    ASSERT_EQ(id.size(), 12u);
    ASSERT_TRUE(QueueIdGenerator::is_valid(id)) << id;
    ASSERT_EQ(id.find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ"), std::string::npos) << id;
  }
}

TEST(QueueIdGenerator, StrictlyIncreasingWhenTheClockStandsStill) {
  QueueIdGenerator generator(std::nullopt, fixed_clock(1'700'000'000'000'000));
  std::string previous = generator.next();
  for (int i = 0; i < 1000; ++i) {
    const std::string id = generator.next();
    ASSERT_LT(previous, id);
    previous = id;
  }
}

TEST(QueueIdGenerator, StrictlyIncreasingWhenTheClockStepsBack) {
  std::int64_t now = 1'700'000'000'000'000;
  QueueIdGenerator generator(std::nullopt, [&now] {
    const auto time = at_microseconds(now);
    now -= 1'000'000;
    return time;
  });
  std::string previous = generator.next();
  for (int i = 0; i < 100; ++i) {
    const std::string id = generator.next();
    ASSERT_LT(previous, id);
    previous = id;
  }
}

TEST(QueueIdGenerator, LaterArrivalSortsLater) {
  // Across digit boundaries: string order must be numeric order.
  const std::vector<std::int64_t> times{31,
                                        32,
                                        1023,
                                        1024,
                                        1'000'000,
                                        1'700'000'000'000'000,
                                        1'700'000'000'000'001,
                                        4'000'000'000'000'000};
  std::vector<std::string> ids;
  for (auto time : times) {
    ids.push_back(QueueIdGenerator(std::nullopt, fixed_clock(time)).next());
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
}

TEST(QueueIdGenerator, SeededPastTheLastIdInTheQueue) {
  const std::string last =
      QueueIdGenerator(std::nullopt, fixed_clock(1'700'000'000'000'000)).next();
  // After a restart with the clock an hour behind.
  QueueIdGenerator generator(last, fixed_clock(1'699'999'996'400'000));
  const std::string id = generator.next();
  EXPECT_LT(last, id);
  EXPECT_LT(id, generator.next());
}

TEST(QueueIdGenerator, AnUnparsableLastIdIsIgnored) {
  QueueIdGenerator generator(std::string("not-an-id"), fixed_clock(5));
  EXPECT_EQ(generator.next(), "000000000005");
}

TEST(QueueIdGenerator, UniqueAcrossThreads) {
  QueueIdGenerator generator(std::nullopt, fixed_clock(1'700'000'000'000'000));
  constexpr int threads = 4;
  constexpr int per_thread = 1000;
  std::vector<std::vector<std::string>> ids(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        ids[t].push_back(generator.next());
      }
    });
  }
  for (auto& worker : workers) {
    worker.join();
  }
  std::set<std::string> all;
  for (const auto& list : ids) {
    EXPECT_TRUE(std::is_sorted(list.begin(), list.end()));
    all.insert(list.begin(), list.end());
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(threads * per_thread));
}

struct ValidityCase {
  std::string id;
  bool valid;
};

class QueueIdValidity : public ::testing::TestWithParam<ValidityCase> {};

TEST_P(QueueIdValidity, IsValid) {
  EXPECT_EQ(QueueIdGenerator::is_valid(GetParam().id), GetParam().valid) << GetParam().id;
}

INSTANTIATE_TEST_SUITE_P(
    Table, QueueIdValidity,
    ::testing::Values(ValidityCase{"01GA4GC208J0", true}, ValidityCase{"000000000000", true},
                      ValidityCase{"ZZZZZZZZZZZZ", true}, ValidityCase{"", false},
                      ValidityCase{"01GA4GC208J", false}, ValidityCase{"01GA4GC208J00", false},
                      ValidityCase{"01ga4gc208j0", false}, ValidityCase{"01GA4GC208I0", false},
                      ValidityCase{"01GA4GC208L0", false}, ValidityCase{"01GA4GC208O0", false},
                      ValidityCase{"01GA4GC208U0", false}, ValidityCase{"01GA4GC208-0", false},
                      ValidityCase{std::string("01GA4GC2\0"
                                               "8J0",
                                               12),
                                   false}));

}  // namespace
}  // namespace stsrelay::queue
