#pragma once

#include <cstdint>
#include <string_view>

#include <openssl/ssl.h>

#include "tls/peer_check.hpp"
#include "tls/session_cache.hpp"

namespace stsrelay::tls {

// Client-side TLS session resumption over a SessionCache owned by the
// SSL_CTX. Per connection, in this order:
//
//   prepare_client(ssl, host);
//   offer_session(ssl, key);                    // resumes when a cached session fits
//   ... handshake ...
//   PeerCheck check = established_verdict(ssl, host);
//   ... decide whether the connection is good enough for its requirement ...
//   keep_sessions(ssl, check);                  // only then are its sessions cached
//
// A connection without offer_session (the policy fetcher, the STARTTLS
// probe) neither resumes nor adds sessions.

// Gives `context` a session cache that OpenSSL hands every new client
// session (TLS 1.3 tickets arrive after the handshake) and that the context
// owns. make_client_context does this.
bool attach_session_cache(SSL_CTX* context, SessionCache::Limits limits = {});
// The cache attach_session_cache gave `context`; nullptr when it has none.
SessionCache* session_cache_of(SSL_CTX* context);

// Offers the newest cached session for `key`, taking it out of the cache.
// Returns whether one was offered; the server may still decline it and make
// a full handshake. Without a cache on the context, does nothing.
bool offer_session(SSL* ssl, const SessionKey& key);

// Whether the handshake resumed a session rather than making a new one.
bool resumed(SSL* ssl);

// The certificate verdict after the handshake. A resumed handshake checks no
// certificate: its verdict is the one recorded with the session when it was
// first established. A full handshake's is verdict(ssl, host).
PeerCheck established_verdict(SSL* ssl, std::string_view host);

// Caches the connection's sessions (those made during the handshake, and
// tickets arriving later) with `check`, the connection having met its
// requirement. Without this call none of them are cached.
void keep_sessions(SSL* ssl, const PeerCheck& check);

}  // namespace stsrelay::tls
