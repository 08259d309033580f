#include "queue/retry_schedule.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace stsrelay::queue {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

const TimePoint now = TimePoint(std::chrono::seconds(1'700'000'000));

// The delay next_attempt chose, in milliseconds (rounded: jitter factors such
// as 0.9 + 0.2 * 0.5 are not exact in binary floating point).
std::int64_t delay_ms(TimePoint next) {
  const auto delay = std::chrono::duration<double, std::milli>(next - now);
  return std::llround(delay.count());
}

TEST(NextAttempt, DoublesFromRetryMinUpToRetryMax) {
  const RetrySettings settings{1min, 1h, 120h};
  struct Case {
    unsigned failed_attempts;
    milliseconds expected;
  };
  const std::vector<Case> cases{
      {0, 1min},
      {1, 1min},
      {2, 2min},
      {3, 4min},
      {4, 8min},
      {5, 16min},
      {6, 32min},
      {7, 1h},
      {8, 1h},
      {100, 1h},
      {std::numeric_limits<unsigned>::max(), 1h},
  };
  for (const auto& c : cases) {
    // random_unit 0.5: the factor 0.9 + 0.2 * 0.5 is 1, no jitter.
    EXPECT_EQ(delay_ms(next_attempt(now, c.failed_attempts, settings, 0.5)), c.expected.count())
        << "after " << c.failed_attempts << " failures";
  }
}

TEST(NextAttempt, JitterStaysWithinTenPercent) {
  const RetrySettings settings{1min, 1h, 120h};
  struct Case {
    unsigned failed_attempts;
    double random_unit;
    std::int64_t expected_ms;
  };
  const std::vector<Case> cases{
      {1, 0.0, 54'000},   // 0.9 * retry_min: the earliest any retry comes
      {1, 0.25, 57'000},  // 0.95
      {1, 0.75, 63'000},  // 1.05
      {1, 1.0, 66'000},   // clamped: 1.1 at most
      {1, 7.0, 66'000},   // out of range: clamped
      {1, -3.0, 54'000},  // out of range: clamped
      {1, std::nan(""), 54'000}, {3, 0.0, 216'000},  // 0.9 * 4 min
      {9, 0.0, 3'240'000},                           // 0.9 * retry_max
      {9, 1.0, 3'960'000},                           // 1.1 * retry_max: the latest any retry comes
  };
  for (const auto& c : cases) {
    EXPECT_EQ(delay_ms(next_attempt(now, c.failed_attempts, settings, c.random_unit)),
              c.expected_ms)
        << "after " << c.failed_attempts << " failures, random " << c.random_unit;
  }
}

TEST(NextAttempt, EveryDelayIsBetweenTheBounds) {
  const RetrySettings settings{30s, 20min, 120h};
  for (unsigned failed = 0; failed < 80; ++failed) {
    for (const double unit : {0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999999}) {
      const auto delay = next_attempt(now, failed, settings, unit) - now;
      EXPECT_GE(delay, 27s) << failed << " " << unit;
      EXPECT_LE(delay, 22min) << failed << " " << unit;
    }
  }
}

TEST(NextAttempt, OddSettings) {
  // retry_max below retry_min: retry_min it is.
  EXPECT_EQ(delay_ms(next_attempt(now, 5, RetrySettings{10min, 1min, 1h}, 0.5)),
            milliseconds(10min).count());
  // No minimum: immediately, and no endless doubling of zero.
  EXPECT_EQ(
      next_attempt(now, std::numeric_limits<unsigned>::max(), RetrySettings{0ms, 1h, 1h}, 0.5),
      now);
  // A cap so large the doubling would overflow long before reaching it.
  const RetrySettings huge{1ms, milliseconds::max(), 1h};
  EXPECT_EQ(next_attempt(now, std::numeric_limits<unsigned>::max(), huge, 0.5), TimePoint::max());
  EXPECT_EQ(delay_ms(next_attempt(now, 11, huge, 0.5)), 1024);
  // Near the end of time the result saturates instead of wrapping.
  const TimePoint late = TimePoint::max() - 1s;
  EXPECT_EQ(next_attempt(late, 1, RetrySettings{1h, 1h, 1h}, 0.5), TimePoint::max());
}

TEST(MaxAge, BounceOnceTheMessageIsMaxAgeOld) {
  const RetrySettings settings{1min, 1h, 120h};
  const TimePoint arrival = now;
  struct Case {
    std::chrono::nanoseconds age;
    bool bounce;
  };
  const std::vector<Case> cases{
      {0s, false},  {119h, false}, {120h - 1ns, false},
      {120h, true}, {121h, true},  {-1h, false},  // a clock that went backwards
  };
  for (const auto& c : cases) {
    EXPECT_EQ(past_max_age(arrival, arrival + c.age, settings), c.bounce) << c.age.count();
    EXPECT_EQ(bounce_instead_of_deferring(arrival, arrival + c.age, settings), c.bounce)
        << c.age.count();
  }
  EXPECT_FALSE(past_max_age(arrival, now, RetrySettings{1min, 1h, milliseconds::max()}));
}

TEST(MaxAge, TheLastRetryIsNoLaterThanTheExpiry) {
  const RetrySettings settings{1min, 1h, 10h};
  const TimePoint arrival = now - 9h - 50min;
  // Without the cap, 1h (jitter off) after now, i.e. 50 min after expiry.
  EXPECT_EQ(next_attempt_before_expiry(arrival, now, 9, settings, 0.5), arrival + 10h);
  // Well before the expiry the cap changes nothing.
  EXPECT_EQ(next_attempt_before_expiry(now, now, 1, settings, 0.5),
            next_attempt(now, 1, settings, 0.5));
  // Already expired: not in the past.
  EXPECT_EQ(next_attempt_before_expiry(now - 11h, now, 3, settings, 0.5), now);
  // A max_age beyond the end of time does not overflow.
  EXPECT_EQ(
      next_attempt_before_expiry(now, now, 1, RetrySettings{1min, 1h, milliseconds::max()}, 0.5),
      next_attempt(now, 1, settings, 0.5));
}

}  // namespace
}  // namespace stsrelay::queue
