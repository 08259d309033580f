#include "sts/policy_cache.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace stsrelay::sts {

namespace {

constexpr std::string_view file_format = "stsrelay-sts-cache";
constexpr int file_version = 1;

std::string errno_text() {
  return std::strerror(errno);
}

std::int64_t to_unix_seconds(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
}

tl::expected<void, std::string> fsync_path(const std::filesystem::path& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    return tl::unexpected("cannot open " + path.string() + ": " + errno_text());
  }
  int result = ::fsync(fd);
  std::string error = result != 0 ? errno_text() : "";
  ::close(fd);
  if (result != 0) {
    return tl::unexpected("cannot fsync " + path.string() + ": " + error);
  }
  return {};
}

tl::expected<std::map<std::string, CachedPolicy, std::less<>>, std::string> parse_file(
    const std::string& text) {
  auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return tl::unexpected(std::string("not a JSON object"));
  }
  if (json.value("format", "") != file_format || !json.contains("version") ||
      !json["version"].is_number_integer()) {
    return tl::unexpected(std::string("not an stsrelay policy cache"));
  }
  if (json["version"].get<int>() != file_version) {
    return tl::unexpected("unknown cache version " + json["version"].dump());
  }
  if (!json.contains("policies") || !json["policies"].is_array()) {
    return tl::unexpected(std::string("no policies array"));
  }
  std::map<std::string, CachedPolicy, std::less<>> policies;
  for (const auto& entry : json["policies"]) {
    if (!entry.is_object() || !entry.contains("domain") || !entry["domain"].is_string() ||
        !entry.contains("id") || !entry["id"].is_string() || !entry.contains("fetched") ||
        !entry["fetched"].is_number_integer() || !entry.contains("policy") ||
        !entry["policy"].is_string()) {
      return tl::unexpected("malformed entry " + entry.dump());
    }
    auto policy = parse_policy(entry["policy"].get<std::string>());
    if (!policy) {
      return tl::unexpected("invalid policy for " + entry["domain"].get<std::string>() + ": " +
                            policy.error().detail);
    }
    CachedPolicy cached{entry["domain"].get<std::string>(), entry["id"].get<std::string>(),
                        std::move(*policy),
                        TimePoint(std::chrono::seconds(entry["fetched"].get<std::int64_t>()))};
    std::string domain = cached.domain;
    policies.insert_or_assign(std::move(domain), std::move(cached));
  }
  return policies;
}

}  // namespace

PolicyCache::PolicyCache(std::filesystem::path file) : file_(std::move(file)) {}

PolicyCache::Loaded PolicyCache::load(std::filesystem::path file) {
  Loaded loaded{PolicyCache(file), std::nullopt};
  std::ifstream input(file, std::ios::binary);
  if (!input) {
    std::error_code error;
    if (std::filesystem::exists(file, error)) {
      loaded.warning = "cannot read policy cache " + file.string() + ": " + errno_text();
    }
    return loaded;
  }
  std::stringstream text;
  text << input.rdbuf();
  auto policies = parse_file(text.str());
  if (policies) {
    loaded.cache.policies_ = std::move(*policies);
    return loaded;
  }
  auto aside = file;
  aside += ".corrupt-" + std::to_string(to_unix_seconds(std::chrono::system_clock::now()));
  std::error_code error;
  std::filesystem::rename(file, aside, error);
  loaded.warning =
      "policy cache " + file.string() + " is unusable (" + policies.error() + "); " +
      (error ? "could not move it aside: " + error.message() : "moved it to " + aside.string()) +
      "; starting with an empty cache";
  return loaded;
}

std::optional<CachedPolicy> PolicyCache::find(std::string_view domain) const {
  auto found = policies_.find(domain);
  if (found == policies_.end()) {
    return std::nullopt;
  }
  return found->second;
}

tl::expected<void, std::string> PolicyCache::store(CachedPolicy policy) {
  std::string domain = policy.domain;
  policies_.insert_or_assign(std::move(domain), std::move(policy));
  return save();
}

tl::expected<void, std::string> PolicyCache::erase(std::string_view domain) {
  auto found = policies_.find(domain);
  if (found == policies_.end()) {
    return {};
  }
  policies_.erase(found);
  return save();
}

std::vector<CachedPolicy> PolicyCache::all() const {
  std::vector<CachedPolicy> policies;
  for (const auto& [domain, policy] : policies_) {
    policies.push_back(policy);
  }
  return policies;
}

tl::expected<void, std::string> PolicyCache::save() const {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& [domain, cached] : policies_) {
    entries.push_back({{"domain", cached.domain},
                       {"id", cached.id},
                       {"fetched", to_unix_seconds(cached.fetched)},
                       {"policy", format_policy(cached.policy)}});
  }
  nlohmann::json document = {
      {"format", file_format}, {"version", file_version}, {"policies", entries}};
  const std::string text =
      document.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";

  std::error_code error;
  const auto directory = file_.has_parent_path() ? file_.parent_path() : ".";
  std::filesystem::create_directories(directory, error);
  if (error) {
    return tl::unexpected("cannot create " + directory.string() + ": " + error.message());
  }
  auto temporary = file_;
  temporary += ".tmp";
  {
    std::ofstream output(temporary, std::ios::binary | std::ios::trunc);
    output << text;
    output.flush();
    if (!output) {
      return tl::unexpected("cannot write " + temporary.string() + ": " + errno_text());
    }
  }
  if (auto synced = fsync_path(temporary, O_RDONLY); !synced) {
    return synced;
  }
  std::filesystem::rename(temporary, file_, error);
  if (error) {
    return tl::unexpected("cannot replace " + file_.string() + ": " + error.message());
  }
  return fsync_path(directory, O_RDONLY | O_DIRECTORY);
}

}  // namespace stsrelay::sts
