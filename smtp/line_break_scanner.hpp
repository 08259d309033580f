#pragma once

#include <cstddef>
#include <cstring>

namespace stsrelay::smtp {

// The next CR or LF at or after a position in [begin, end), or end. Each kind
// found is remembered until passed, so text with many of one kind and few of
// the other (bare LF lines, say) is still scanned once, not once per line.
class LineBreakScanner {
 public:
  LineBreakScanner(const char* begin, const char* end)
      : end_(end), cr_(find(begin, '\r')), lf_(find(begin, '\n')) {}

  const char* next(const char* from) {
    if (cr_ < from) {
      cr_ = find(from, '\r');
    }
    if (lf_ < from) {
      lf_ = find(from, '\n');
    }
    return cr_ < lf_ ? cr_ : lf_;
  }

 private:
  const char* find(const char* from, char c) const {
    const void* hit = std::memchr(from, c, static_cast<std::size_t>(end_ - from));
    return hit != nullptr ? static_cast<const char*>(hit) : end_;
  }

  const char* end_;
  const char* cr_;
  const char* lf_;
};

}  // namespace stsrelay::smtp
