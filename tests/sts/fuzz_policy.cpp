// libFuzzer entry for the policy parser (clang only, see CMakeLists.txt):
// the input is the body of a policy response.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sts/mx_pattern.hpp"
#include "sts/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stsrelay::sts;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto parsed = parse_policy(text);
  if (!parsed) {
    if (parsed.error().rule.empty() || parsed.error().detail.empty()) {
      std::abort();
    }
    return 0;
  }
  // What is accepted keeps the §3.2 invariants and survives the cache's
  // round trip unchanged.
  if (parsed->max_age.count() < 0 || parsed->max_age.count() > 31557600) {
    std::abort();
  }
  if (parsed->mode != Mode::none && parsed->mx.empty()) {
    std::abort();
  }
  for (const auto& pattern : parsed->mx) {
    if (!is_valid_mx_pattern(pattern)) {
      std::abort();
    }
  }
  const auto again = parse_policy(format_policy(*parsed));
  if (!again || !(*again == *parsed)) {
    std::abort();
  }
  return 0;
}
