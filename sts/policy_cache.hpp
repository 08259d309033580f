#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "sts/policy.hpp"

namespace stsrelay::sts {

using TimePoint = std::chrono::system_clock::time_point;

// A policy as fetched for one TXT id. Its lifetime counts from the last
// successful fetch (RFC 8461 §5).
struct CachedPolicy {
  std::string domain;  // lower case, no trailing dot
  std::string id;      // the TXT record's id the policy was fetched for
  Policy policy;
  TimePoint fetched;

  TimePoint expires() const { return fetched + policy.max_age; }
  bool expired(TimePoint now) const { return now >= expires(); }
  bool operator==(const CachedPolicy&) const = default;
};

// The policies known to this relay, kept in memory and in one file
// (sts.cache_file) so that they survive restarts: a relay that forgot its
// policies on restart could be downgraded by anyone who can block the fetch.
// Not thread-safe: it belongs to the policy engine's event loop.
class PolicyCache {
 public:
  // An empty cache that saves to `file`; nothing is read.
  explicit PolicyCache(std::filesystem::path file);

  struct Loaded;
  // Reads `file`; a missing file is an empty cache. A file that cannot be
  // parsed is renamed aside (FILE.corrupt-UNIXTIME) and reported in
  // `warning`, and the cache starts empty: a bad cache must never keep the
  // relay from running.
  static Loaded load(std::filesystem::path file);

  std::optional<CachedPolicy> find(std::string_view domain) const;
  // Adds or replaces the domain's policy and saves the file.
  tl::expected<void, std::string> store(CachedPolicy policy);
  // Drops the domain's policy and saves the file.
  tl::expected<void, std::string> erase(std::string_view domain);
  std::vector<CachedPolicy> all() const;

  const std::filesystem::path& file() const { return file_; }

 private:
  // Write to a temporary file, fsync, rename over the old one, fsync the
  // directory: a crash leaves either the old cache or the new one.
  tl::expected<void, std::string> save() const;

  std::filesystem::path file_;
  std::map<std::string, CachedPolicy, std::less<>> policies_;
};

struct PolicyCache::Loaded {
  PolicyCache cache;
  std::optional<std::string> warning;
};

}  // namespace stsrelay::sts
