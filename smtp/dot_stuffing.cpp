#include "smtp/dot_stuffing.hpp"

#include "smtp/line_break_scanner.hpp"

namespace stsrelay::smtp {

// Whole runs of line content are copied at once, a CRLF that ends one
// together with it: the per-octet work is only the memchr scan.
void DotStuffer::feed(std::string_view chunk, std::string& out) {
  if (chunk.empty()) {
    return;
  }
  out.reserve(out.size() + chunk.size() + chunk.size() / 64 + 8);
  const char* p = chunk.data();
  const char* const end = p + chunk.size();
  if (pending_cr_) {
    pending_cr_ = false;
    out += "\r\n";
    at_line_start_ = true;
    if (*p == '\n') {
      ++p;  // CR LF: the line end already written
    }
  }
  LineBreakScanner scanner(p, end);
  while (p != end) {
    const char c = *p;
    if (c == '\n') {
      out += "\r\n";  // a bare LF
      at_line_start_ = true;
      ++p;
      continue;
    }
    if (c == '\r') {
      if (end - p == 1) {
        pending_cr_ = true;  // its LF, if any, comes with the next chunk
        return;
      }
      out += "\r\n";
      at_line_start_ = true;
      p += p[1] == '\n' ? 2 : 1;
      continue;
    }
    if (at_line_start_ && c == '.') {
      out += '.';
    }
    const char* const line_break = scanner.next(p);
    if (end - line_break >= 2 && line_break[0] == '\r' && line_break[1] == '\n') {
      out.append(p, line_break + 2);
      at_line_start_ = true;
      p = line_break + 2;
    } else {
      out.append(p, line_break);
      at_line_start_ = false;
      p = line_break;
    }
  }
}

void DotStuffer::finish(std::string& out) {
  if (pending_cr_ || !at_line_start_) {
    out += "\r\n";
  }
  pending_cr_ = false;
  at_line_start_ = true;
  out += ".\r\n";
}

std::string dot_stuff(std::string_view content) {
  std::string out;
  DotStuffer stuffer;
  stuffer.feed(content, out);
  stuffer.finish(out);
  return out;
}

}  // namespace stsrelay::smtp
