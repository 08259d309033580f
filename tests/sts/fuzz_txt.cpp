// libFuzzer entry for the TXT record parser (clang only, see CMakeLists.txt):
// the input is split at NUL bytes into the records of one answer.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "sts/txt_record.hpp"

namespace {

bool is_valid_id(std::string_view id) {
  if (id.empty() || id.size() > 32) {
    return false;
  }
  for (const char c : id) {
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> records;
  while (!input.empty()) {
    const std::size_t end = input.find('\0');
    records.emplace_back(input.substr(0, end));
    input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
  }
  const auto parsed = stsrelay::sts::parse_sts_txt(records);
  if (parsed) {
    // An accepted record names a well-formed id and came from an STS record.
    if (!is_valid_id(parsed->id)) {
      std::abort();
    }
  } else if (parsed.error().detail.empty() ||
             stsrelay::sts::to_string(parsed.error().error) == "unknown") {
    std::abort();
  }
  return 0;
}
