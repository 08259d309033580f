// libFuzzer entry for MX pattern matching (clang only, see CMakeLists.txt):
// the input is the pattern, a NUL byte, then the host.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "sts/mx_pattern.hpp"

namespace {

std::string ascii_upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') {
      c = static_cast<char>(c - 'a' + 'A');
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stsrelay::sts;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t separator = input.find('\0');
  if (separator == std::string_view::npos) {
    return 0;
  }
  const std::string_view pattern = input.substr(0, separator);
  const std::string_view host = input.substr(separator + 1);
  const bool matches = mx_pattern_matches(pattern, host);
  // Only valid patterns match, and never an empty host.
  if (matches && (!is_valid_mx_pattern(pattern) || host.empty())) {
    std::abort();
  }
  // Case and a trailing dot never change the verdict.
  if (mx_pattern_matches(ascii_upper(pattern), ascii_upper(host)) != matches) {
    std::abort();
  }
  if (!host.ends_with('.') && mx_pattern_matches(pattern, std::string(host) + ".") != matches) {
    std::abort();
  }
  // A valid pattern without a wildcard matches itself.
  if (is_valid_mx_pattern(pattern) && !pattern.starts_with("*.") &&
      !mx_pattern_matches(pattern, pattern)) {
    std::abort();
  }
  return 0;
}
