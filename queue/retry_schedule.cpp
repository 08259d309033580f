#include "queue/retry_schedule.hpp"

#include <algorithm>
#include <cmath>

namespace stsrelay::queue {

namespace {

using std::chrono::milliseconds;

// retry_min * 2^(failed_attempts - 1), at most retry_max, without ever
// computing a product that could overflow.
milliseconds backoff(unsigned failed_attempts, const RetrySettings& settings) {
  const milliseconds minimum = std::max(settings.retry_min, milliseconds::zero());
  const milliseconds maximum = std::max(settings.retry_max, minimum);
  milliseconds delay = minimum;
  // At most about 63 rounds before the cap is reached, whatever the count.
  for (unsigned failure = 1;
       failure < failed_attempts && delay > milliseconds::zero() && delay < maximum; ++failure) {
    delay = delay > maximum / 2 ? maximum : delay * 2;
  }
  return delay;
}

double jitter_factor(double random_unit) {
  // NaN fails both comparisons and counts as 0.
  const double unit = random_unit >= 0.0 ? std::min(random_unit, 1.0) : 0.0;
  return 0.9 + 0.2 * unit;
}

// time + delay, or TimePoint::max() when that is past it: compared in
// floating point, which cannot overflow, before converting.
TimePoint add_saturating(TimePoint time, std::chrono::duration<double, std::milli> delay) {
  if (delay >= TimePoint::max() - time) {
    return TimePoint::max();
  }
  return time + std::chrono::duration_cast<TimePoint::duration>(delay);
}

}  // namespace

TimePoint next_attempt(TimePoint now, unsigned failed_attempts, const RetrySettings& settings,
                       double random_unit) {
  const std::chrono::duration<double, std::milli> delay(
      static_cast<double>(backoff(failed_attempts, settings).count()) * jitter_factor(random_unit));
  return add_saturating(now, delay);
}

bool past_max_age(TimePoint arrival, TimePoint now, const RetrySettings& settings) {
  // Whole milliseconds, as max_age: truncating the age never makes it reach
  // max_age early, and converting max_age to nanoseconds could overflow.
  return now >= arrival &&
         std::chrono::duration_cast<milliseconds>(now - arrival) >= settings.max_age;
}

bool bounce_instead_of_deferring(TimePoint arrival, TimePoint now, const RetrySettings& settings) {
  return past_max_age(arrival, now, settings);
}

TimePoint next_attempt_before_expiry(TimePoint arrival, TimePoint now, unsigned failed_attempts,
                                     const RetrySettings& settings, double random_unit) {
  const TimePoint next = next_attempt(now, failed_attempts, settings, random_unit);
  const TimePoint expiry =
      add_saturating(arrival, std::chrono::duration<double, std::milli>(settings.max_age));
  return std::max(now, std::min(next, expiry));
}

}  // namespace stsrelay::queue
