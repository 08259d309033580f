#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <openssl/ssl.h>

#include "tls/peer_check.hpp"

namespace stsrelay::tls {

// What a resumed session must have been established under. A session is
// only ever offered to a connection with the same key: the same name sent in
// SNI and checked in the certificate, the same port, and the same demand on
// the certificate, so a session whose certificate was merely reported on
// (opportunistic TLS) never stands in for one that had to validate.
struct SessionKey {
  std::string host;  // as given to prepare_client; case and a trailing dot do not matter
  std::uint16_t port = 0;
  bool certificate_required = false;  // MTA-STS enforce/testing: a valid certificate
};

// Client-side TLS sessions (TLS 1.2 session IDs and tickets, TLS 1.3
// tickets), each with the certificate verdict of the full handshake that
// made it: a resumed handshake runs no certificate check, so that recorded
// verdict is the connection's verdict.
//
// Each entry carries its own expiry (session_resumption.cpp sets it: at most
// max_age after the full handshake whose verdict it carries, never past the
// earliest expiry in the verified chain nor the session's lifetime). Taking
// a session removes it, so a TLS 1.3 ticket is used once (RFC 8446 §C.4);
// the tickets the resumed connection receives replace it. At most
// max_sessions are held, max_per_key of them for one key; the oldest go
// first.
//
// Not thread-safe: every connection using it must run on one thread (the
// relay's event loop), which is also where OpenSSL calls back into it.
class SessionCache {
 public:
  struct Limits {
    std::size_t max_sessions = 2048;
    std::size_t max_per_key = 16;
    std::chrono::seconds max_age = std::chrono::hours(1);
  };

  struct SessionDeleter {
    void operator()(SSL_SESSION* session) const { SSL_SESSION_free(session); }
  };
  using SessionPtr = std::unique_ptr<SSL_SESSION, SessionDeleter>;

  // A cached session with what is needed to trust it again.
  struct Entry {
    SessionPtr session;
    PeerCheck check;  // the verdict of the full handshake
    // How long that verdict stands: max_age after the full handshake, and no
    // later than the first expiry in the verified chain.
    std::chrono::system_clock::time_point trusted_until;
    // The same, and no later than the session's own lifetime.
    std::chrono::system_clock::time_point expires_at;
  };

  explicit SessionCache(Limits limits);
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;
  ~SessionCache();

  // Keeps `entry` under `key` unless it expired already or its session
  // cannot be resumed. `now` is for tests.
  void store(const SessionKey& key, Entry entry,
             std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
  // Removes and returns the newest unexpired session for `key`, dropping the
  // expired ones.
  std::optional<Entry> take(const SessionKey& key, std::chrono::system_clock::time_point now =
                                                       std::chrono::system_clock::now());

  std::size_t size() const { return order_.size(); }
  std::size_t size(const SessionKey& key) const;
  const Limits& limits() const { return limits_; }

 private:
  struct Stored {
    std::string key;
    Entry entry;
  };
  using Order = std::list<Stored>;  // newest first

  void erase(Order::iterator position);

  Limits limits_;
  Order order_;
  // Per key, oldest first.
  std::unordered_map<std::string, std::vector<Order::iterator>> by_key_;
};

}  // namespace stsrelay::tls
