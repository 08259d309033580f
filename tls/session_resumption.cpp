#include "tls/session_resumption.hpp"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <openssl/x509.h>

namespace stsrelay::tls {

namespace {

using Clock = std::chrono::system_clock;

// What one connection contributes to and takes from the cache, in its SSL's
// ex_data from offer_session until SSL_free.
struct Resumption {
  SessionCache* cache = nullptr;
  SessionKey key;
  // The cached entry whose session was offered, for its recorded verdict.
  std::optional<SessionCache::Entry> offered;
  // Set by keep_sessions: sessions are cached from then on.
  std::optional<PeerCheck> kept;
  Clock::time_point trusted_until{};
  // Sessions that arrived before keep_sessions (TLS 1.2 makes its session
  // during the handshake), waiting for the connection's verdict.
  std::vector<SessionCache::SessionPtr> pending;
};

void free_cache(void* /*parent*/, void* pointer, CRYPTO_EX_DATA* /*data*/, int /*index*/,
                long /*argl*/, void* /*argp*/) {
  delete static_cast<SessionCache*>(pointer);
}

void free_resumption(void* /*parent*/, void* pointer, CRYPTO_EX_DATA* /*data*/, int /*index*/,
                     long /*argl*/, void* /*argp*/) {
  delete static_cast<Resumption*>(pointer);
}

int cache_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_cache);
  return index;
}

int resumption_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_resumption);
  return index;
}

Resumption* resumption_of(SSL* ssl) {
  return static_cast<Resumption*>(SSL_get_ex_data(ssl, resumption_index()));
}

// When the certificate (or a CA certificate) behind a verdict stops being
// valid; the far future when that cannot be read.
Clock::time_point certificate_expiry(X509* cert, Clock::time_point now) {
  const ASN1_TIME* not_after = cert == nullptr ? nullptr : X509_get0_notAfter(cert);
  int days = 0;
  int seconds = 0;
  if (not_after == nullptr || ASN1_TIME_diff(&days, &seconds, nullptr, not_after) != 1) {
    return Clock::time_point::max();
  }
  return now + std::chrono::hours(24) * days + std::chrono::seconds(seconds);
}

Clock::time_point chain_expiry(SSL* ssl, Clock::time_point now) {
  Clock::time_point earliest = certificate_expiry(SSL_get0_peer_certificate(ssl), now);
  if (STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl); chain != nullptr) {
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      earliest = std::min(earliest, certificate_expiry(sk_X509_value(chain, i), now));
    }
  }
  return earliest;
}

// The session's own lifetime: its timeout and, for a TLS 1.3 ticket, the
// lifetime the server gave it, counted from when it was made.
Clock::time_point session_expiry(const SSL_SESSION* session) {
  const auto made = Clock::from_time_t(static_cast<std::time_t>(SSL_SESSION_get_time(session)));
  auto lifetime = std::chrono::seconds(SSL_SESSION_get_timeout(session));
  if (SSL_SESSION_has_ticket(session) == 1) {
    const unsigned long hint = SSL_SESSION_get_ticket_lifetime_hint(session);
    if (hint > 0) {
      lifetime = std::min<std::chrono::seconds>(lifetime, std::chrono::seconds(hint));
    }
  }
  return made + lifetime;
}

void store(Resumption& resumption, SessionCache::SessionPtr session) {
  SessionCache::Entry entry;
  entry.expires_at = std::min(resumption.trusted_until, session_expiry(session.get()));
  entry.session = std::move(session);
  entry.check = *resumption.kept;
  entry.trusted_until = resumption.trusted_until;
  resumption.cache->store(resumption.key, std::move(entry));
}

// A copy of the connection's session for the cache. The connection keeps
// changing its own: OpenSSL marks it unresumable when the connection ends
// without a close_notify (as SMTP clients end them after QUIT), which RFC
// 5246 §7.2.1 no longer asks for, and when the TLS 1.3 handshake is done.
SessionCache::SessionPtr copy_of(SSL_SESSION* session) {
  return SessionCache::SessionPtr(session == nullptr ? nullptr : SSL_SESSION_dup(session));
}

// OpenSSL's new-session callback. Returns 0: OpenSSL keeps its reference,
// the cache holds a copy.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  Resumption* resumption = resumption_of(ssl);
  if (resumption == nullptr || resumption->cache == nullptr ||
      SSL_SESSION_is_resumable(session) != 1) {
    return 0;
  }
  if (resumption->kept) {
    store(*resumption, copy_of(session));
  } else if (resumption->pending.size() < resumption->cache->limits().max_per_key) {
    resumption->pending.push_back(copy_of(session));
  }
  return 0;
}

}  // namespace

bool attach_session_cache(SSL_CTX* context, SessionCache::Limits limits) {
  if (session_cache_of(context) != nullptr) {
    return true;
  }
  auto cache = std::make_unique<SessionCache>(limits);
  if (cache_index() < 0 || SSL_CTX_set_ex_data(context, cache_index(), cache.get()) != 1) {
    return false;
  }
  cache.release();
  // The internal store would offer sessions on its own terms: every session
  // goes through on_new_session and is offered only by offer_session.
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(context, on_new_session);
  return true;
}

SessionCache* session_cache_of(SSL_CTX* context) {
  return static_cast<SessionCache*>(SSL_CTX_get_ex_data(context, cache_index()));
}

bool offer_session(SSL* ssl, const SessionKey& key) {
  SessionCache* cache = session_cache_of(SSL_get_SSL_CTX(ssl));
  if (cache == nullptr || resumption_index() < 0 || resumption_of(ssl) != nullptr) {
    return false;
  }
  auto resumption = std::make_unique<Resumption>();
  resumption->cache = cache;
  resumption->key = key;
  if (SSL_set_ex_data(ssl, resumption_index(), resumption.get()) != 1) {
    return false;
  }
  Resumption& attached = *resumption.release();
  attached.offered = cache->take(key);
  if (!attached.offered) {
    return false;
  }
  if (SSL_set_session(ssl, attached.offered->session.get()) != 1) {
    attached.offered.reset();
    return false;
  }
  return true;
}

bool resumed(SSL* ssl) {
  return SSL_session_reused(ssl) == 1;
}

PeerCheck established_verdict(SSL* ssl, std::string_view host) {
  if (!resumed(ssl)) {
    return verdict(ssl, host);
  }
  const Resumption* resumption = resumption_of(ssl);
  if (resumption == nullptr || !resumption->offered) {
    // Only offer_session sets a session, so this is a bug; the certificate
    // callback did not run, so nothing vouches for it.
    return {CertificateVerdict::validation_failure,
            "resumed a TLS session with no recorded certificate check"};
  }
  return resumption->offered->check;
}

void keep_sessions(SSL* ssl, const PeerCheck& check) {
  Resumption* resumption = resumption_of(ssl);
  if (resumption == nullptr || resumption->cache == nullptr || resumption->kept) {
    return;
  }
  const auto now = Clock::now();
  if (resumed(ssl)) {
    if (!resumption->offered) {
      return;
    }
    // The verdict is the one of the full handshake, and stands no longer
    // than it did.
    resumption->kept = resumption->offered->check;
    resumption->trusted_until = resumption->offered->trusted_until;
  } else {
    resumption->kept = check;
    resumption->trusted_until =
        std::min(now + resumption->cache->limits().max_age, chain_expiry(ssl, now));
  }
  for (auto& session : resumption->pending) {
    store(*resumption, std::move(session));
  }
  resumption->pending.clear();
  if (resumed(ssl) && SSL_version(ssl) < TLS1_3_VERSION) {
    // A TLS 1.2 resumption brings no new session (OpenSSL calls no callback
    // for it): the one just used goes back, as TLS 1.2 allows reusing it.
    store(*resumption, copy_of(SSL_get0_session(ssl)));
  }
}

}  // namespace stsrelay::tls
