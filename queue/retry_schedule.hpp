#pragma once

#include <chrono>

#include "queue/message.hpp"

namespace stsrelay::queue {

// The [queue] settings that decide when a deferred recipient is tried again
// and when it is given up.
struct RetrySettings {
  std::chrono::milliseconds retry_min{std::chrono::minutes(1)};
  std::chrono::milliseconds retry_max{std::chrono::hours(1)};
  std::chrono::milliseconds max_age{std::chrono::hours(24 * 5)};
};

// When to try a recipient again after its failed_attempts-th failed attempt
// at now: retry_min after the first failure, doubling with each further one
// (2 * retry_min after the second, 4 * after the third, ...) up to retry_max.
// failed_attempts 0 counts as 1. A retry_max below retry_min counts as
// retry_min.
//
// Jitter, so that the recipients of a burst that failed together do not all
// come back in the same second: the delay is multiplied by
// 0.9 + 0.2 * random_unit, random_unit in [0, 1) (clamped into it). The delay
// is so always within [0.9 * retry_min, 1.1 * retry_max]. Pure: pass a random
// number in production and a fixed one in tests. Never overflows: any attempt
// count is fine, and a time past TimePoint::max() is TimePoint::max().
TimePoint next_attempt(TimePoint now, unsigned failed_attempts, const RetrySettings& settings,
                       double random_unit);

// The message arrived max_age or more before now.
bool past_max_age(TimePoint arrival, TimePoint now, const RetrySettings& settings);

// After a failed, temporary (deferred) attempt at now: bounce the recipient
// instead of deferring it again? Postfix's rule (maximal_queue_lifetime): yes
// once the message is max_age old at the time of the failure. A recipient is
// so tried until max_age and bounced at its first failure after that, at
// most about 1.1 * retry_max late (next_attempt_before_expiry narrows that).
bool bounce_instead_of_deferring(TimePoint arrival, TimePoint now, const RetrySettings& settings);

// next_attempt, but no later than arrival + max_age, so that the last retry
// happens when the message expires rather than up to retry_max after it.
TimePoint next_attempt_before_expiry(TimePoint arrival, TimePoint now, unsigned failed_attempts,
                                     const RetrySettings& settings, double random_unit);

}  // namespace stsrelay::queue
