#include "tls/session_cache.hpp"

#include <algorithm>
#include <cctype>

namespace stsrelay::tls {

namespace {

std::string key_text(const SessionKey& key) {
  std::string host = key.host;
  if (!host.empty() && host.back() == '.') {
    host.pop_back();
  }
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // A host name has no NUL: the parts cannot run into each other.
  return host + '\0' + std::to_string(key.port) + '\0' + (key.certificate_required ? "v" : "o");
}

}  // namespace

SessionCache::SessionCache(Limits limits) : limits_(limits) {
  limits_.max_sessions = std::max<std::size_t>(limits_.max_sessions, 1);
  limits_.max_per_key = std::max<std::size_t>(limits_.max_per_key, 1);
}

SessionCache::~SessionCache() = default;

void SessionCache::store(const SessionKey& key, Entry entry,
                         std::chrono::system_clock::time_point now) {
  if (!entry.session || SSL_SESSION_is_resumable(entry.session.get()) != 1 ||
      entry.expires_at <= now || entry.trusted_until <= now) {
    return;
  }
  std::string text = key_text(key);
  auto& positions = by_key_[text];
  order_.push_front(Stored{text, std::move(entry)});
  positions.push_back(order_.begin());
  while (positions.size() > limits_.max_per_key) {
    erase(positions.front());
  }
  while (order_.size() > limits_.max_sessions) {
    erase(std::prev(order_.end()));
  }
}

std::optional<SessionCache::Entry> SessionCache::take(const SessionKey& key,
                                                      std::chrono::system_clock::time_point now) {
  const std::string text = key_text(key);
  for (;;) {
    auto found = by_key_.find(text);
    if (found == by_key_.end() || found->second.empty()) {
      return std::nullopt;
    }
    Order::iterator newest = found->second.back();
    if (newest->entry.expires_at <= now || newest->entry.trusted_until <= now ||
        SSL_SESSION_is_resumable(newest->entry.session.get()) != 1) {
      erase(newest);  // and try the next newest
      continue;
    }
    Entry entry = std::move(newest->entry);
    erase(newest);
    return entry;
  }
}

std::size_t SessionCache::size(const SessionKey& key) const {
  auto found = by_key_.find(key_text(key));
  return found == by_key_.end() ? 0 : found->second.size();
}

void SessionCache::erase(Order::iterator position) {
  auto found = by_key_.find(position->key);
  if (found != by_key_.end()) {
    auto& positions = found->second;
    positions.erase(std::find(positions.begin(), positions.end(), position));
    if (positions.empty()) {
      by_key_.erase(found);
    }
  }
  order_.erase(position);
}

}  // namespace stsrelay::tls
