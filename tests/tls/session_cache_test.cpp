#include "tls/session_cache.hpp"

#include <array>
#include <string>

#include <gtest/gtest.h>

// The cache alone, with hand-made sessions: keys, single use, expiry, bounds.
namespace stsrelay::tls {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

// A session OpenSSL considers resumable (it has a session ID), told apart
// from the others by `id`.
SessionCache::SessionPtr make_session(unsigned char id) {
  SessionCache::SessionPtr session(SSL_SESSION_new());
  std::array<unsigned char, 32> bytes{};
  bytes.fill(id);
  SSL_SESSION_set1_id(session.get(), bytes.data(), static_cast<unsigned int>(bytes.size()));
  return session;
}

unsigned char id_of(const SSL_SESSION* session) {
  unsigned int length = 0;
  const unsigned char* id = SSL_SESSION_get_id(session, &length);
  return length == 0 ? 0 : id[0];
}

SessionCache::Entry entry(unsigned char id, Clock::time_point now = Clock::now(),
                          CertificateVerdict verdict = CertificateVerdict::valid) {
  SessionCache::Entry entry;
  entry.session = make_session(id);
  entry.check = {verdict, "recorded " + std::to_string(id)};
  entry.trusted_until = now + 1h;
  entry.expires_at = now + 1h;
  return entry;
}

const SessionKey validated{"mx.b.test", 25, true};

TEST(SessionCache, GivesBackWhatWasStoredWithItsVerdictOnce) {
  SessionCache cache({});
  cache.store(validated, entry(1, Clock::now(), CertificateVerdict::valid));
  auto taken = cache.take(validated);
  ASSERT_TRUE(taken);
  EXPECT_EQ(id_of(taken->session.get()), 1);
  EXPECT_EQ(taken->check.verdict, CertificateVerdict::valid);
  EXPECT_EQ(taken->check.detail, "recorded 1");
  EXPECT_FALSE(cache.take(validated)) << "a session is used once";
  EXPECT_EQ(cache.size(), 0u);
}

TEST(SessionCache, KeysOnNamePortAndRequirement) {
  SessionCache cache({});
  cache.store(validated, entry(1));
  const SessionKey others[] = {
      {"mx2.b.test", 25, true},
      {"mx.b.test", 587, true},
      {"mx.b.test", 25, false},  // opportunistic must not take an enforce session either
      {"b.test", 25, true},
  };
  for (const auto& key : others) {
    EXPECT_FALSE(cache.take(key)) << key.host << ":" << key.port << " " << key.certificate_required;
  }
  // Case and a trailing dot name the same host.
  EXPECT_TRUE(cache.take({"MX.B.test.", 25, true}));
}

TEST(SessionCache, AnOpportunisticSessionNeverServesAValidatedConnection) {
  SessionCache cache({});
  cache.store({"mx.b.test", 25, false}, entry(1, Clock::now(), CertificateVerdict::host_mismatch));
  EXPECT_FALSE(cache.take(validated));
  auto taken = cache.take({"mx.b.test", 25, false});
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->check.verdict, CertificateVerdict::host_mismatch);
}

TEST(SessionCache, NewestFirst) {
  SessionCache cache({});
  const auto now = Clock::now();
  for (unsigned char id = 1; id <= 3; ++id) {
    cache.store(validated, entry(id, now));
  }
  EXPECT_EQ(id_of(cache.take(validated)->session.get()), 3);
  EXPECT_EQ(id_of(cache.take(validated)->session.get()), 2);
  EXPECT_EQ(id_of(cache.take(validated)->session.get()), 1);
}

TEST(SessionCache, DropsExpiredSessions) {
  SessionCache cache({});
  const auto now = Clock::now();
  auto stale = entry(1, now);
  stale.expires_at = now + 10s;
  cache.store(validated, std::move(stale), now);
  auto distrusted = entry(2, now);
  distrusted.trusted_until = now + 20s;
  cache.store(validated, std::move(distrusted), now);
  auto fresh = entry(3, now);
  cache.store({"mx2.b.test", 25, true}, std::move(fresh), now);

  EXPECT_FALSE(cache.take(validated, now + 30s)) << "both are past their time";
  EXPECT_EQ(cache.size(validated), 0u);
  EXPECT_TRUE(cache.take({"mx2.b.test", 25, true}, now + 30s));

  auto already = entry(4, now);
  already.expires_at = now - 1s;
  cache.store(validated, std::move(already), now);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(SessionCache, RefusesSessionsThatCannotBeResumed) {
  SessionCache cache({});
  SessionCache::Entry blank = entry(1);
  blank.session.reset(SSL_SESSION_new());  // no ID, no ticket
  cache.store(validated, std::move(blank));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(SessionCache, HoldsAtMostItsLimitsDroppingTheOldest) {
  SessionCache cache({.max_sessions = 5, .max_per_key = 2, .max_age = 1h});
  const auto now = Clock::now();
  cache.store(validated, entry(1, now));
  cache.store(validated, entry(2, now));
  cache.store(validated, entry(3, now));
  EXPECT_EQ(cache.size(validated), 2u);
  EXPECT_EQ(id_of(cache.take(validated)->session.get()), 3);
  EXPECT_EQ(id_of(cache.take(validated)->session.get()), 2);

  for (unsigned char id = 10; id < 30; ++id) {
    cache.store({"mx" + std::to_string(id) + ".b.test", 25, true}, entry(id, now));
  }
  EXPECT_EQ(cache.size(), 5u);
  EXPECT_FALSE(cache.take({"mx10.b.test", 25, true}));
  EXPECT_TRUE(cache.take({"mx29.b.test", 25, true}));
  EXPECT_TRUE(cache.take({"mx25.b.test", 25, true}));
}

}  // namespace
}  // namespace stsrelay::tls
